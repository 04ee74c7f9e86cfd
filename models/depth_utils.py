"""Sigmoid disparity -> metric depth, as the VFDepth models do it (spec/vfdepth.md §3.3).

The depth decoders end in a sigmoid sigma in (0, 1).  It is read as a disparity between 1/max and
1/min, and (VFDepth) the depth is then scaled by the camera's focal length so that one network
serves cameras of different fields of view:

    depth = 1 / (1/max_depth + (1/min_depth - 1/max_depth) * sigma) * fx / focal_length_scale

fx is the camera's focal length in pixels at the network's input resolution (the resized K), so
the effective depth range [min_depth, max_depth] * fx / focal_length_scale differs per camera.
"""
from __future__ import annotations

from typing import Sequence, Union

import torch
import torch.nn.functional as F

Number = Union[float, int, torch.Tensor]


def sigmoid_to_depth(sigma: torch.Tensor, min_depth: float, max_depth: float) -> torch.Tensor:
    """1 / (1/max + (1/min - 1/max) * sigma): sigma in [0, 1] -> depth in [min_depth, max_depth].

    sigma = 0 gives max_depth and sigma = 1 gives min_depth (monodepth2's ``disp_to_depth``).
    """
    if not 0 < min_depth < max_depth:
        raise ValueError(f"need 0 < min_depth < max_depth, got {min_depth}, {max_depth}")
    min_disp = 1.0 / max_depth
    max_disp = 1.0 / min_depth
    return 1.0 / (min_disp + (max_disp - min_disp) * sigma)


def focal_scaled_depth(
    sigma: torch.Tensor, K: torch.Tensor, min_depth: float, max_depth: float, focal_length_scale: float
) -> torch.Tensor:
    """VFDepth's ``to_depth``: :func:`sigmoid_to_depth` times fx / focal_length_scale per camera.

    Args:
        sigma: [..., 1, H, W] sigmoid outputs of the depth decoder.
        K: [..., 3, 3] intrinsics at the input resolution (leading dims as sigma's).
        min_depth, max_depth: the range of the sigmoid mapping, before focal scaling.
        focal_length_scale: the reference focal length (300 px in VFDepth); 0 disables the scaling.
    Returns:
        [..., 1, H, W] depth in metres.
    """
    depth = sigmoid_to_depth(sigma, min_depth, max_depth)
    if focal_length_scale:
        fx = K[..., 0, 0].to(depth.dtype)
        depth = depth * (fx / focal_length_scale)[..., None, None, None]
    return depth


def depth_range(K: torch.Tensor, min_depth: float, max_depth: float, focal_length_scale: float):
    """(lowest, highest) depth [...] each camera of intrinsics K [..., 3, 3] can output."""
    scale = K[..., 0, 0] / focal_length_scale if focal_length_scale else torch.ones_like(K[..., 0, 0])
    return min_depth * scale, max_depth * scale


def resize_maps(x: torch.Tensor, size: Sequence[int], mode: str = "bilinear") -> torch.Tensor:
    """Resize maps [..., C, h, w] to ``size`` (H, W), any leading dims.

    ``bilinear`` uses align_corners=False, as monodepth2 does to bring every scale's disparity to
    the input resolution; ``area`` averages (for shrinking images).  Returns x itself when it
    already has that size.
    """
    size = (int(size[0]), int(size[1]))
    if tuple(x.shape[-2:]) == size:
        return x
    lead, (c, h, w) = x.shape[:-3], x.shape[-3:]
    flat = x.reshape(-1, c, h, w)
    if mode == "bilinear":
        out = F.interpolate(flat, size=size, mode="bilinear", align_corners=False)
    else:
        out = F.interpolate(flat, size=size, mode=mode)
    return out.reshape(*lead, c, *size)
