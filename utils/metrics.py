"""Evaluation metrics: depth (``utils.depth_metrics``) and KITTI 2015 scene flow
(``utils.sceneflow_metrics``), re-exported here. See those modules for the protocols."""
from .depth_metrics import (  # noqa: F401
    EIGEN_CROP,
    GARG_CROP,
    METRIC_NAMES,
    MODES,
    DepthMetricsAccumulator,
    compute_depth_errors,
    crop_mask,
    depth_metrics_per_image,
    masked_median,
)
from .sceneflow_metrics import (  # noqa: F401
    ABS_THRESH,
    QUANTITIES,
    REGIONS,
    REL_THRESH,
    KittiSceneFlowAccumulator,
    disparity_depth_errors,
    disparity_outliers,
    flow_end_point_error,
    flow_outliers,
    kitti_interpolate_background,
    kitti_sceneflow_counts,
    kitti_sceneflow_percentages,
)

__all__ = [
    "EIGEN_CROP", "GARG_CROP", "METRIC_NAMES", "MODES", "DepthMetricsAccumulator", "compute_depth_errors",
    "crop_mask", "depth_metrics_per_image", "masked_median",
    "ABS_THRESH", "QUANTITIES", "REGIONS", "REL_THRESH", "KittiSceneFlowAccumulator", "disparity_depth_errors",
    "disparity_outliers", "flow_end_point_error", "flow_outliers", "kitti_interpolate_background",
    "kitti_sceneflow_counts", "kitti_sceneflow_percentages",
]
