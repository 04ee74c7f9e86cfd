"""Backward (inverse) warping: render the target view by sampling the source view.

For each target pixel, back-project it with the target depth, move the 3D point into the source
camera with T_source_target, project it with the source K and sample the source map there.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F

from .intrinsics import invert_intrinsics
from .projection import backproject, pixels_to_grid, project
from .se3 import transform_point_map


def sample_at_pixels(
    source: torch.Tensor,
    pixels: torch.Tensor,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
) -> torch.Tensor:
    """Sample ``source`` [..., C, Hs, Ws] at pixel positions [..., 2, H, W] -> [..., C, H, W].

    Pixels are (u, v) with integer pixel centres; sampling uses ``grid_sample`` with
    ``align_corners=True``.  The leading dims of source and pixels broadcast.
    """
    channels, hs, ws = source.shape[-3:]
    h, w = pixels.shape[-2:]
    batch = torch.broadcast_shapes(source.shape[:-3], pixels.shape[:-3])
    grid = pixels_to_grid(pixels, (hs, ws))
    # grid_sample wants exactly one batch dim: flatten the (broadcast) leading dims.
    source_flat = source.expand(*batch, channels, hs, ws).reshape(-1, channels, hs, ws)
    grid_flat = grid.expand(*batch, h, w, 2).reshape(-1, h, w, 2)
    sampled = F.grid_sample(source_flat, grid_flat, mode=mode, padding_mode=padding_mode, align_corners=True)
    return sampled.reshape(*batch, channels, h, w)


def backward_warp(
    source: torch.Tensor,
    depth_target: torch.Tensor,
    K_target: torch.Tensor,
    K_source: torch.Tensor,
    T_source_target: torch.Tensor,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Warp a source-view map into the target view.

    Args:
        source: [..., C, Hs, Ws] any map of the source view (image, mask with ``mode="nearest"``,
            depth, features).
        depth_target: [..., 1, H, W] z-depth of the target view.
        K_target: [..., 3, 3] intrinsics of the target view at size (H, W).
        K_source: [..., 3, 3] intrinsics of the source view at size (Hs, Ws).
        T_source_target: [..., 4, 4] maps points from the target camera frame into the source
            camera frame.
    Returns:
        warped: [..., C, H, W], the source map seen from the target view.
        valid: [..., 1, H, W] float in {0, 1}: 1 where the target point is in front of the source
            camera and projects inside the source image.  Its dtype is the depth's.
    All leading dims broadcast against each other.
    """
    points_target = backproject(depth_target, invert_intrinsics(K_target))
    points_source = transform_point_map(T_source_target, points_target)
    pixels, valid = project(points_source, K_source, image_hw=source.shape[-2:])
    warped = sample_at_pixels(source, pixels, mode=mode, padding_mode=padding_mode)
    valid = valid.to(depth_target.dtype).expand(*warped.shape[:-3], *valid.shape[-3:])
    return warped, valid
