"""Pose consistency between per-camera motions of a rigid rig (FSM baseline, §4 of spec/vfdepth.md)."""
from __future__ import annotations

import torch

from geometry import compose, invert_transform, matrix_to_euler, rotation_part, translation_part

from .reprojection import spatial_transform


def motion_in_camera_frame(T_cam_motion: torch.Tensor, E_cam: torch.Tensor, E_ref: torch.Tensor) -> torch.Tensor:
    """Express camera c's motion in a reference camera's frame: E_ref^-1 E_c T_c E_c^-1 E_ref.

    Args:
        T_cam_motion: [..., 4, 4] T_c(t+f)_c(t), camera c's motion (points of c at t into c at t+f).
        E_cam: [..., 4, 4] T_rig_c.
        E_ref: [..., 4, 4] T_rig_ref.
    Returns:
        [..., 4, 4] T_ref(t+f)_ref(t) implied by camera c's motion on a rigid rig.
    """
    T_ref_cam = spatial_transform(E_cam, E_ref)  # E_ref^-1 E_c
    return compose(T_ref_cam, T_cam_motion, invert_transform(T_ref_cam))


def pose_consistency_loss(
    T_cams: torch.Tensor,
    extrinsics: torch.Tensor,
    rotation_weight: float = 10.0,
    reference_camera: int = 0,
) -> torch.Tensor:
    """FSM pose consistency: every camera's motion, moved into the reference camera's frame,
    should equal the reference camera's own motion.

    For each camera c != ref: D = E_ref^-1 E_c T_c E_c^-1 E_ref versus T_ref, and

        loss_c = |t(D) - t(T_ref)|_2 + rotation_weight * |euler_XYZ(R(D)) - euler_XYZ(R(T_ref))|_2

    averaged over the cameras c != ref and all leading dims (batch, frames).  Euler angles are not
    wrapped: fine for the small motions between consecutive frames.  VFDepth adds this term
    (weight ``pose_loss_coeff``) to each camera's loss with 0 for camera 0 and then averages over
    all N cameras, so its effective weight there is (N - 1) / N of this average.

    Args:
        T_cams: [..., N, 4, 4] per-camera motions T_c(t+f)_c(t).
        extrinsics: [..., N, 4, 4] T_rig_c (broadcast with T_cams).
        rotation_weight: weight of the Euler-angle term (10 in VFDepth).
        reference_camera: index of the reference camera.
    Returns:
        scalar (0, with a graph, when N = 1).
    """
    T_cams, extrinsics = torch.broadcast_tensors(T_cams, extrinsics)
    n = T_cams.shape[-3]
    others = [c for c in range(n) if c != reference_camera]
    if not others:
        return T_cams.sum() * 0.0
    ref = reference_camera
    aligned = motion_in_camera_frame(
        T_cams[..., others, :, :], extrinsics[..., others, :, :], extrinsics[..., ref : ref + 1, :, :]
    )
    T_ref = T_cams[..., ref : ref + 1, :, :]
    translation_error = torch.linalg.vector_norm(translation_part(aligned) - translation_part(T_ref), dim=-1)
    euler_aligned = matrix_to_euler(rotation_part(aligned), order="XYZ")
    euler_ref = matrix_to_euler(rotation_part(T_ref), order="XYZ")
    rotation_error = torch.linalg.vector_norm(euler_aligned - euler_ref, dim=-1)
    return (translation_error + rotation_weight * rotation_error).mean()
