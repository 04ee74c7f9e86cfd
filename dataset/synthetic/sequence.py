"""The in-memory result of rendering one synthetic drive: what the world produces and every
format writer consumes. Arrays are numpy, one entry per frame t and camera n.

Frames and conventions
- World frame: fixed, z up (x along the street at the start, y left). Rig frame: the dataset's own
  vehicle frame (x forward, y left, z up, origin on the ground below the rear axle, as DDAD).
- Camera frame: OpenCV (x right, y down, z forward). `T_a_b` maps points from frame b into a.
- Pixels: integer coordinates are pixel centres.
- Depth is the z coordinate in the camera frame (metres), not the ray length; every pixel has a
  finite depth (the backdrop is far away but real geometry).
- Scene flow (KITTI / multi-mono-sf convention): for the surface point X seen at pixel p of camera
  n at frame t, `scene_flow_fwd[t, n, v, u] = X(t+1) in camera n at t+1  -  X(t) in camera n at t`
  (ego-motion included), so `optical_flow_fwd = project(X(t) + sf) - p`. `_bwd` likewise to t-1.
  At the last (first) frame the forward (backward) flow is extrapolated from the motion model.
"""

from dataclasses import dataclass, field
from typing import Dict, List

import numpy as np


@dataclass
class SyntheticSequence:
    name: str                      # scene name, e.g. "000000"
    camera_names: List[str]        # dataset names in rig order, e.g. ["CAMERA_01", ...] or ["image_02", "image_03"]
    K: np.ndarray                  # [N, 3, 3] float64 at the rendered resolution
    T_rig_cam: np.ndarray          # [N, 4, 4] float64 extrinsics (camera -> rig)
    image_hw: tuple                # (H, W) of the rendered images
    timestamps: np.ndarray         # [T] float64 seconds from the start (10 Hz for DDAD/KITTI)
    T_world_rig: np.ndarray        # [T, 4, 4] float64 rig poses
    images: np.ndarray             # [T, N, H, W, 3] uint8 RGB
    depth: np.ndarray              # [T, N, H, W] float32 metres (z in the camera frame)
    object_ids: np.ndarray         # [T, N, H, W] int32: 0 static world, k > 0 car k (stable over time)
    scene_flow_fwd: np.ndarray     # [T, N, H, W, 3] float32 metres, see module docstring
    scene_flow_bwd: np.ndarray     # [T, N, H, W, 3] float32
    optical_flow_fwd: np.ndarray   # [T, N, H, W, 2] float32 pixels (du, dv)
    optical_flow_bwd: np.ndarray   # [T, N, H, W, 2] float32
    T_rig_lidar: np.ndarray        # [4, 4] float64 lidar mounting
    lidar_points: List[np.ndarray]  # per frame [M_t, 4] float32 x, y, z (lidar frame), intensity in [0, 1]
    self_occlusion: np.ndarray     # [N, H, W] uint8, 1 = pixel shows the scene, 0 = ego vehicle body
    metadata: Dict = field(default_factory=dict)   # preset name, seed, sun direction, ...

    @property
    def num_frames(self) -> int:
        return self.images.shape[0]

    @property
    def num_cameras(self) -> int:
        return self.images.shape[1]
