"""View rendering for the multi-camera losses (VFDepth, §3.5 of spec/vfdepth.md).

A target camera's view is synthesised from a source camera (another time, another camera, or
both) by backward warping with the target depth.  Transforms follow DESIGN.md: ``T_a_b`` maps
points from frame b into frame a; extrinsics are ``E = T_rig_cam``.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import torch

from geometry import (backproject, compose, invert_intrinsics, invert_transform, project, sample_at_pixels,
                      transform_point_map)


def spatial_transform(E_target: torch.Tensor, E_source: torch.Tensor) -> torch.Tensor:
    """T_source_target = E_source^-1 @ E_target, at one time instant.

    Args:
        E_target: [..., 4, 4] T_rig_target, the target camera's extrinsics.
        E_source: [..., 4, 4] T_rig_source, the source camera's extrinsics.
    Returns:
        [..., 4, 4] mapping points of the target camera frame into the source camera frame.
    """
    return compose(invert_transform(E_source), E_target)


def spatio_temporal_transform(
    E_target: torch.Tensor, E_source: torch.Tensor, T_target_pose: torch.Tensor
) -> torch.Tensor:
    """T_source(t+f)_target(t) = (E_source^-1 @ E_target) @ T_target_pose.

    Args:
        E_target: [..., 4, 4] T_rig_target.
        E_source: [..., 4, 4] T_rig_source.
        T_target_pose: [..., 4, 4] the target camera's motion T_target(t+f)_target(t): maps points of
            the target camera at time t into the target camera at time t+f (VFDepth's
            ``cam_T_cam``, the transform of the temporal warp).
    Returns:
        [..., 4, 4] mapping points of the target camera at t into the source camera at t+f (the
        rig is rigid, so the cameras keep their extrinsics).
    """
    return compose(spatial_transform(E_target, E_source), T_target_pose)


def warp_views(
    source_images: torch.Tensor,
    source_masks: torch.Tensor,
    depth_target: torch.Tensor,
    K_target: torch.Tensor,
    K_source: torch.Tensor,
    T_source_target: torch.Tensor,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Render the target view from source views.

    The image is sampled bilinearly and the source mask (e.g. the ego-vehicle mask) with nearest
    sampling, both with zero padding.  Non-finite values (possible only from a non-finite depth or
    pose) become 0 in the image and 0 in the mask (VFDepth writes 2.0 into the image there; the
    mask makes the value irrelevant).

    Args:
        source_images: [..., C, Hs, Ws] source images.
        source_masks: [..., 1, Hs, Ws] source masks (1 = valid).
        depth_target: [..., 1, H, W] z-depth of the target view.
        K_target: [..., 3, 3] target intrinsics at (H, W).
        K_source: [..., 3, 3] source intrinsics at (Hs, Ws).
        T_source_target: [..., 4, 4] maps target-camera points into the source camera.
    Returns:
        image [..., C, H, W] and mask [..., 1, H, W]: the warped source mask times the validity
        (in front of the source camera and inside its image).  Leading dims broadcast.
    """
    # geometry.backward_warp, with the projection computed once for the image and the mask
    points = transform_point_map(T_source_target, backproject(depth_target, invert_intrinsics(K_target)))
    pixels, valid = project(points, K_source, image_hw=source_images.shape[-2:])
    image = sample_at_pixels(source_images, pixels, mode="bilinear")
    mask = sample_at_pixels(source_masks.to(image.dtype), pixels, mode="nearest")
    valid = valid.to(depth_target.dtype)
    finite = torch.isfinite(image).all(dim=-3, keepdim=True) & torch.isfinite(mask)
    image = torch.where(torch.isfinite(image), image, torch.zeros_like(image))
    mask = torch.where(finite, mask * valid, torch.zeros_like(mask))
    return image, mask


def overlap_view(
    warps: Sequence[Tuple[torch.Tensor, torch.Tensor]], reference_sum: bool = False, eps: float = 1e-8
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Combine the warps of several neighbouring cameras into one "overlap" view.

    Default: where several neighbours are valid, their images are averaged with their masks as
    weights, and the mask is the union (max) of the masks, so it stays in [0, 1].  Where no
    neighbour is valid, image and mask are 0.

    ``reference_sum=True`` reproduces VFDepth, which assumes the neighbours never overlap and
    sums both the images and the masks: where two neighbours overlap the image is their sum (about
    twice as bright) and the mask reaches 2, which doubles the weight of those pixels in the
    masked mean.

    Args:
        warps: (image [..., C, H, W], mask [..., 1, H, W]) per neighbour, e.g. from
            :func:`warp_views` (after intensity alignment the images are already zero outside
            their masks).
        reference_sum: sum instead of averaging (see above).
        eps: floor of the weight sum in the average.
    Returns:
        (image [..., C, H, W], mask [..., 1, H, W]).
    """
    if len(warps) == 0:
        raise ValueError("overlap_view needs at least one warp")
    images = torch.stack(torch.broadcast_tensors(*[image for image, _ in warps]), dim=0)
    masks = torch.stack(torch.broadcast_tensors(*[mask for _, mask in warps]), dim=0)
    if reference_sum:
        return images.sum(dim=0), masks.sum(dim=0)
    weight_sum = masks.sum(dim=0)
    image = (images * masks).sum(dim=0) / weight_sum.clamp(min=eps)
    return image, masks.max(dim=0).values
