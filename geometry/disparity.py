"""Stereo disparity <-> depth, and scene flow -> optical flow.

Disparity is in pixels of the image whose focal length ``focal`` (pixels) is given; depth and
baseline are in metres: depth = focal * baseline / disparity.
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch

from .intrinsics import invert_intrinsics
from .projection import backproject, pixel_grid, project

Number = Union[float, int, torch.Tensor]


def _broadcast_per_item(value: Number, like: torch.Tensor) -> Number:
    """Let a per-batch-item tensor ([B], [B, N], ...) broadcast against ``like`` [B, ..., 1, H, W].

    Trailing singleton dims are appended, so [B] and [B, 1, 1, 1] both work; numbers pass through.
    """
    if isinstance(value, torch.Tensor) and 0 < value.dim() < like.dim():
        value = value.reshape(*value.shape, *([1] * (like.dim() - value.dim())))
    return value


def _reciprocal_scaled(
    x: torch.Tensor,
    focal: Number,
    baseline: Number,
    eps: float,
    lower: Optional[float],
    upper: Optional[float],
) -> torch.Tensor:
    """focal * baseline / (x + eps), optionally clamped to [lower, upper]."""
    out = _broadcast_per_item(focal, x) * _broadcast_per_item(baseline, x) / (x + eps)
    if lower is not None or upper is not None:
        out = out.clamp(min=lower, max=upper)
    return out


def disparity_to_depth(
    disparity: torch.Tensor,
    focal: Number,
    baseline: Number,
    eps: float = 0.0,
    min_depth: Optional[float] = None,
    max_depth: Optional[float] = None,
) -> torch.Tensor:
    """Depth = focal * baseline / (disparity + eps), clamped to [min_depth, max_depth] if given.

    Args:
        disparity: [B, ...] in pixels.  With eps = 0 a zero disparity gives inf (then max_depth
            if given); multi-mono-sf uses eps = 1e-4, min_depth = 1e-3, max_depth = 80.
        focal: fx in pixels, a number or a per-item tensor [B] / [B, 1, 1, 1].
        baseline: metres (0.54 for KITTI), number or per-item tensor.
    """
    return _reciprocal_scaled(disparity, focal, baseline, eps, min_depth, max_depth)


def depth_to_disparity(
    depth: torch.Tensor,
    focal: Number,
    baseline: Number,
    eps: float = 0.0,
    min_disparity: Optional[float] = None,
    max_disparity: Optional[float] = None,
) -> torch.Tensor:
    """Disparity (pixels) = focal * baseline / (depth + eps); the inverse of :func:`disparity_to_depth`."""
    return _reciprocal_scaled(depth, focal, baseline, eps, min_disparity, max_disparity)


def scene_flow_to_optical_flow(
    depth_or_points: torch.Tensor,
    scene_flow: torch.Tensor,
    K: torch.Tensor,
    return_valid: bool = False,
) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
    """Optical flow [..., 2, H, W] induced by a scene flow: project(P + sf) - (u, v).

    Args:
        depth_or_points: depth [..., 1, H, W] of frame t (back-projected with K), or its points
            [..., 3, H, W] in the camera frame at t.
        scene_flow: [..., 3, H, W] 3D motion (metres, camera frame) of each pixel's point from
            frame t to t+1.
        K: [..., 3, 3] intrinsics at size (H, W).
        return_valid: also return bool [..., 1, H, W]: the moved point is in front of the camera.
            Elsewhere the flow points to the off-image pixel (-1, -1) (see ``project``).
    """
    if depth_or_points.shape[-3] == 1:
        points = backproject(depth_or_points, invert_intrinsics(K))
    elif depth_or_points.shape[-3] == 3:
        points = depth_or_points
    else:
        raise ValueError(f"expected depth [..., 1, H, W] or points [..., 3, H, W], got {tuple(depth_or_points.shape)}")
    pixels, valid = project(points + scene_flow, K)
    h, w = pixels.shape[-2:]
    flow = pixels - pixel_grid(h, w, device=pixels.device, dtype=pixels.dtype)[:2]
    return (flow, valid) if return_valid else flow
