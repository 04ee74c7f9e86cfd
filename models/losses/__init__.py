"""Shared self-supervised loss terms: photometric error, masking, smoothness, intensity alignment,
view rendering for the multi-camera losses, and pose consistency.

Depends on ``geometry`` only (not on dataset/, trainer/ or network/).  Tensors are channels first
with arbitrary leading dims; transforms ``T_a_b`` map frame b into frame a (DESIGN.md).
"""
from .census import census_distance, census_loss, census_transform
from .intensity import align_intensity
from .masked import masked_mean
from .photometric import SSIM_C1, SSIM_C2, automask, l1_error, min_reprojection, photometric_error, ssim_error
from .pose_consistency import motion_in_camera_frame, pose_consistency_loss
from .reprojection import overlap_view, spatial_transform, spatio_temporal_transform, warp_views
from .sceneflow import (
    balance,
    disocclusion_mask,
    disparity_term,
    points_from_disparity,
    robust_epe,
    scene_flow_terms,
    stereo_warp,
    supervised_terms,
)
from .smoothness import (
    edge_aware_smoothness,
    mean_normalise,
    plain_smoothness,
    robust_l1,
    second_order_edge_aware_smoothness,
)

__all__ = [
    "balance",
    "census_distance",
    "census_loss",
    "census_transform",
    "disocclusion_mask",
    "disparity_term",
    "points_from_disparity",
    "robust_epe",
    "scene_flow_terms",
    "stereo_warp",
    "supervised_terms",
    "SSIM_C1",
    "SSIM_C2",
    "align_intensity",
    "automask",
    "edge_aware_smoothness",
    "l1_error",
    "masked_mean",
    "mean_normalise",
    "min_reprojection",
    "motion_in_camera_frame",
    "overlap_view",
    "photometric_error",
    "plain_smoothness",
    "pose_consistency_loss",
    "robust_l1",
    "second_order_edge_aware_smoothness",
    "spatial_transform",
    "spatio_temporal_transform",
    "ssim_error",
    "warp_views",
]
