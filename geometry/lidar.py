"""Lidar points -> sparse depth maps (0 = no measurement), one per camera, fully vectorised."""
from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np
import torch

from .se3 import transform_points_nx3

ArrayLike = Union[np.ndarray, torch.Tensor]


def _to_tensor(x: ArrayLike, dtype: Optional[torch.dtype] = None, device=None) -> torch.Tensor:
    t = torch.as_tensor(x, device=device)
    if dtype is not None:
        t = t.to(dtype)
    return t


def points_to_depth_map(
    points: ArrayLike,
    K: ArrayLike,
    T_cam_lidar: ArrayLike,
    image_hw: Sequence[int],
    min_depth: float = 1e-3,
) -> torch.Tensor:
    """Project a point cloud into one or several cameras and keep the nearest point per pixel.

    Args:
        points: [N, 3] (or [N, >=3]; extra columns such as reflectance are ignored) in the
            lidar frame L.
        K: [C, 3, 3] or [3, 3] intrinsics at size ``image_hw`` = (H, W).
        T_cam_lidar: [C, 4, 4] or [4, 4], maps points from the lidar frame into each camera frame.
        min_depth: points with z <= min_depth (behind or too close) are dropped.
    Returns:
        depth [C, 1, H, W] (or [1, H, W] when both K and T_cam_lidar are single), z-depth in
        metres, 0 where no point landed.  Float dtype of ``points`` (float32 for other dtypes),
        on the device of ``points``.

    A point is assigned to the pixel whose centre is nearest (integer coordinates are pixel
    centres: round, unlike DGP's truncation); when several land on one pixel the smallest depth
    wins (as in KITTI's ground truth; DGP keeps the last write).
    """
    points = _to_tensor(points)
    dtype = points.dtype if points.is_floating_point() else torch.float32
    device = points.device
    points = points.to(dtype)[:, :3]
    K = _to_tensor(K, dtype, device)
    T = _to_tensor(T_cam_lidar, dtype, device)
    single = K.dim() == 2 and T.dim() == 2
    num_cams = torch.broadcast_shapes(K.shape[:-2], T.shape[:-2], (1,))[0]
    K = K.expand(num_cams, 3, 3)
    T = T.expand(num_cams, 4, 4)
    height, width = image_hw

    cam_points = transform_points_nx3(T, points)  # [C, N, 3]
    z = cam_points[..., 2]
    keep = (z > min_depth) & torch.isfinite(cam_points).all(-1)
    z_safe = torch.where(keep, z, torch.ones_like(z))
    uvw = cam_points @ K.transpose(-1, -2)
    # floor(x + 0.5): nearest pixel centre (ties go right/down, consistently).
    u = torch.floor(torch.where(keep, uvw[..., 0] / z_safe, torch.full_like(z, -1.0)) + 0.5)
    v = torch.floor(torch.where(keep, uvw[..., 1] / z_safe, torch.full_like(z, -1.0)) + 0.5)
    keep = keep & (u >= 0) & (u <= width - 1) & (v >= 0) & (v <= height - 1)

    # One flat buffer for all cameras: camera c owns indices [c*H*W, (c+1)*H*W).
    cam_index = torch.arange(num_cams, device=device)[:, None].expand_as(z)
    flat = (cam_index * height * width + v.clamp(0, height - 1).long() * width + u.clamp(0, width - 1).long())[keep]
    depth = torch.full((num_cams * height * width,), float("inf"), dtype=dtype, device=device)
    depth = depth.scatter_reduce(0, flat, z[keep], reduce="amin", include_self=True)
    depth = torch.where(torch.isinf(depth), torch.zeros_like(depth), depth)
    depth = depth.reshape(num_cams, 1, height, width)
    return depth[0] if single else depth
