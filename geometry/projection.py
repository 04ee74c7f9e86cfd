"""Back-projection of depth maps and projection of point maps with a pinhole K.

Pixels: integer coordinates are pixel centres, u in 0..W-1 (columns), v in 0..H-1 (rows).
Point maps are channels first, [..., 3, H, W], in the OpenCV camera frame (x right, y down,
z forward).  Leading dims ``...`` of the maps and of K broadcast against each other.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch

# Where project() puts points that are not in front of the camera: one pixel above and left of
# the image, so that bilinear sampling with zero padding reads exactly 0 there.
BEHIND_CAMERA_PIXEL = -1.0

# Pixels this far (in pixels) outside the border still count as inside: round-off alone moves a
# border pixel that maps onto itself to -1e-15 or W-1+1e-6, which must not make it invalid.
# Bilinear sampling there loses at most this fraction of the border value.
BORDER_TOLERANCE = 1e-3


def pixel_grid(
    height: int,
    width: int,
    device: Optional[torch.device] = None,
    dtype: Optional[torch.dtype] = None,
) -> torch.Tensor:
    """Homogeneous pixel coordinates [3, H, W]: channel 0 is u (column), 1 is v (row), 2 is 1."""
    dtype = dtype or torch.get_default_dtype()
    v, u = torch.meshgrid(
        torch.arange(height, device=device, dtype=dtype),
        torch.arange(width, device=device, dtype=dtype),
        indexing="ij",
    )
    return torch.stack((u, v, torch.ones_like(u)), dim=0)


def backproject(depth: torch.Tensor, K_inv: torch.Tensor) -> torch.Tensor:
    """Depth [..., 1, H, W] (z along the optical axis) -> points [..., 3, H, W] in the camera frame.

    X = depth * K^-1 (u, v, 1).  ``K_inv`` is [..., 3, 3] (or [..., 4, 4]; its 3x3 block is used).
    """
    h, w = depth.shape[-2:]
    grid = pixel_grid(h, w, device=depth.device, dtype=depth.dtype).flatten(1)  # [3, HW]
    rays = (K_inv[..., :3, :3] @ grid).unflatten(-1, (h, w))  # [..., 3, H, W]
    return rays * depth


def project(
    points: torch.Tensor,
    K: torch.Tensor,
    image_hw: Optional[Sequence[int]] = None,
    eps: float = 1e-7,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Points [..., 3, H, W] in the camera frame -> pixels [..., 2, H, W] (u, v) and valid [..., 1, H, W].

    ``valid`` (bool) is z > eps and, when ``image_hw`` = (H_img, W_img) is given, the pixel lies
    inside [0, W_img - 1] x [0, H_img - 1] (up to :data:`BORDER_TOLERANCE`).  Points with
    z <= eps (behind or on the camera plane) have no image: they get the finite pixel (-1, -1) (:data:`BEHIND_CAMERA_PIXEL`) instead of a
    mirrored or infinite one, and zero gradient.  So no NaN or inf reaches ``grid_sample``.
    ``K`` is [..., 3, 3] (or [..., 4, 4]; its 3x3 block is used).
    """
    h, w = points.shape[-2:]
    projected = (K[..., :3, :3] @ points.flatten(-2)).unflatten(-1, (h, w))
    z = points[..., 2:3, :, :]
    in_front = z > eps
    # torch.where differentiates both branches: divide by a safe value where the point is unused.
    z_safe = torch.where(in_front, projected[..., 2:3, :, :], torch.ones_like(z))
    pixels = projected[..., :2, :, :] / z_safe
    pixels = torch.where(in_front, pixels, torch.full_like(pixels, BEHIND_CAMERA_PIXEL))
    valid = in_front
    if image_hw is not None:
        valid = valid & inside_image(pixels, image_hw)
    return pixels, valid


def inside_image(pixels: torch.Tensor, image_hw: Sequence[int]) -> torch.Tensor:
    """Bool [..., 1, H, W]: pixel (u, v) [..., 2, H, W] lies within [0, W-1] x [0, H-1].

    The bounds are widened by :data:`BORDER_TOLERANCE` to absorb round-off.
    """
    height, width = image_hw
    u, v = pixels[..., 0:1, :, :], pixels[..., 1:2, :, :]
    tol = BORDER_TOLERANCE
    return (u >= -tol) & (u <= width - 1 + tol) & (v >= -tol) & (v <= height - 1 + tol)


def pixels_to_grid(pixels: torch.Tensor, image_hw: Sequence[int]) -> torch.Tensor:
    """Pixels [..., 2, H, W] of an image of size ``image_hw`` -> grid [..., H, W, 2] in [-1, 1].

    For ``F.grid_sample(..., align_corners=True)``: pixel centre 0 maps to -1 and W-1 to +1.
    """
    height, width = image_hw
    # A 1-pixel-wide image has a single centre; any scale then works, avoid dividing by 0.
    scale = pixels.new_tensor([2.0 / max(width - 1, 1), 2.0 / max(height - 1, 1)])
    grid = pixels * scale[:, None, None] - 1.0
    return grid.movedim(-3, -1)
