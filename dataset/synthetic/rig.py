"""Camera rigs of the synthetic world: DDAD, nuScenes and KITTI-like presets, or your own.

Frames: the *vehicle* frame is x forward, y left, z up with its origin on the ground below the
rear axle (DDAD / nuScenes ego frame); the world renderer drives the vehicle.  The *rig* frame is
the dataset's own reference: the vehicle frame for DDAD and nuScenes, the left rectified camera
for KITTI (``T_vehicle_rig`` says where it is).  ``T_rig_cam`` are OpenCV cameras (x right,
y down, z forward); ``T_a_b`` maps points from frame b into frame a.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from geometry import quaternion_to_matrix, resize_intrinsics


@dataclass
class Rig:
    """A camera rig (plus lidar and ego body) at one image size.

    Attributes:
        name: preset name (or anything for a custom rig).
        camera_names: dataset names of the cameras, in rig order.
        K: [N, 3, 3] float64 intrinsics at ``image_hw``.
        T_rig_cam: [N, 4, 4] float64 extrinsics (camera -> rig).
        native_hw: (H, W) of the real sensor images.
        image_hw: (H, W) the rig renders at.
        frame_rate_hz: camera frame rate.
        T_rig_lidar: [4, 4] lidar output frame -> rig.
        lidar_rings: number of beams.
        lidar_vfov_deg: (upper, lower) elevation of the top and bottom beam, degrees.
        lidar_azimuth_samples: samples per revolution.
        lidar_max_range: metres; farther hits are dropped.
        self_occlusion: whether the ego body is rendered by default.
        T_vehicle_rig: [4, 4] rig frame -> vehicle frame (identity unless the rig is a camera).
        T_lidar_sensor: [4, 4] where the spinning sensor sits in the lidar output frame (identity
            unless, as in DDAD, the cloud is given in the vehicle frame).
        ego_boxes: [E, 6] ego body boxes in the vehicle frame: centre (x, y, z), half sizes.
    """

    name: str
    camera_names: List[str]
    K: np.ndarray
    T_rig_cam: np.ndarray
    native_hw: Tuple[int, int]
    image_hw: Tuple[int, int]
    frame_rate_hz: float
    T_rig_lidar: np.ndarray
    lidar_rings: int = 64
    lidar_vfov_deg: Tuple[float, float] = (2.0, -24.8)
    lidar_azimuth_samples: int = 2048
    lidar_max_range: float = 120.0
    self_occlusion: bool = False
    T_vehicle_rig: np.ndarray = field(default_factory=lambda: np.eye(4))
    T_lidar_sensor: np.ndarray = field(default_factory=lambda: np.eye(4))
    ego_boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 6)))

    @property
    def num_cameras(self) -> int:
        return len(self.camera_names)

    def resized(self, image_hw: Optional[Sequence[int]]) -> "Rig":
        """A copy at another image size (K follows with the half-pixel convention)."""
        rig = copy.deepcopy(self)
        if image_hw is None:
            return rig
        image_hw = (int(image_hw[0]), int(image_hw[1]))
        if image_hw[0] < 1 or image_hw[1] < 1:
            raise ValueError(f"image_hw must be positive, got {image_hw}")
        K = torch.as_tensor(self.K, dtype=torch.float64)
        rig.K = resize_intrinsics(K, self.image_hw, image_hw, convention="half_pixel").numpy()
        rig.image_hw = image_hw
        return rig

    def validate(self) -> "Rig":
        n = len(self.camera_names)
        checks = [
            (np.shape(self.K) == (n, 3, 3), f"K must be [{n}, 3, 3], got {np.shape(self.K)}"),
            (np.shape(self.T_rig_cam) == (n, 4, 4), f"T_rig_cam must be [{n}, 4, 4], got {np.shape(self.T_rig_cam)}"),
            (np.shape(self.T_rig_lidar) == (4, 4), "T_rig_lidar must be [4, 4]"),
            (np.shape(self.T_vehicle_rig) == (4, 4), "T_vehicle_rig must be [4, 4]"),
            (np.shape(self.T_lidar_sensor) == (4, 4), "T_lidar_sensor must be [4, 4]"),
            (np.ndim(self.ego_boxes) == 2 and np.shape(self.ego_boxes)[1] == 6, "ego_boxes must be [E, 6]"),
            (len(self.image_hw) == 2 and min(self.image_hw) >= 1, f"bad image_hw {self.image_hw}"),
            (self.frame_rate_hz > 0, "frame_rate_hz must be positive"),
            (self.lidar_rings >= 1 and self.lidar_azimuth_samples >= 8, "lidar needs >= 1 ring and >= 8 azimuth samples"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"invalid rig {self.name!r}: {message}")
        return self


# ----------------------------------------------------------------------------- helpers
def _transform(R: np.ndarray, t: Sequence[float]) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = t
    return T


def _quaternion_transform(q: Sequence[float], t: Sequence[float]) -> np.ndarray:
    """T from a (w, x, y, z) quaternion, normalised first, and a translation."""
    R = quaternion_to_matrix(torch.tensor(q, dtype=torch.float64)).numpy()
    return _transform(R, t)


def _yawed_camera(yaw_deg: float, position: Sequence[float], pitch_down_deg: float = 0.0) -> np.ndarray:
    """T_vehicle_cam of an OpenCV camera looking along ``yaw`` (from the vehicle x axis towards y),
    tilted down by ``pitch_down``, its image x axis horizontal."""
    yaw, pitch = math.radians(yaw_deg), math.radians(pitch_down_deg)
    forward = np.array([math.cos(yaw) * math.cos(pitch), math.sin(yaw) * math.cos(pitch), -math.sin(pitch)])
    right = np.array([math.sin(yaw), -math.cos(yaw), 0.0])
    down = np.cross(forward, right)
    return _transform(np.stack([right, down, forward], axis=1), position)


def _K(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


# ----------------------------------------------------------------------------- presets
# DDAD / DGP sample scene_02: (name, (fx, fy, cx, cy), (qw, qx, qy, qz), (x, y, z)), camera -> vehicle.
_DDAD_CALIBRATION = (
    ("CAMERA_01", (2181.530254382263, 2181.6034466840038, 928.0218817103168, 615.9567879463117),
     (0.512734825660536, -0.5204131359731259, 0.483559134543592, -0.48212418510268484),
     (1.4855427639599839, 0.28616353316692766, 1.5617304615771417)),
    ("CAMERA_05", (1057.0685006265498, 1055.9745605834144, 964.6834850172629, 588.6612498587956),
     (0.6607769368469352, -0.6751131476133265, 0.23003455787756122, -0.2338379349739517),
     (1.52093975696107, 0.4574157637366625, 1.5753242209317193)),
    ("CAMERA_06", (1060.7556963722263, 1059.2549314610033, 946.5584747928981, 611.407084771089),
     (0.2256789490858021, -0.22195853829756987, 0.6685661783754228, -0.6729210089964616),
     (1.5330512698187704, -0.4134779206162875, 1.5332483324642254)),
    ("CAMERA_07", (1058.949432375444, 1056.7776258435003, 966.0260232796186, 615.2019014245489),
     (0.6700935030735806, -0.6832162910666042, -0.20377261275794284, 0.2065597227185677),
     (1.1047227373333044, 0.4272270943622516, 1.563046883152822)),
    ("CAMERA_08", (1057.2909120690622, 1060.1497929739965, 966.4159674505777, 619.2699631002707),
     (0.21126882397726474, -0.2086369912947377, -0.6756492997311923, 0.6747844942287067),
     (1.0954118728427602, -0.46058894121415506, 1.55477381656209)),
    ("CAMERA_09", (1063.4579724697585, 1065.2223608725776, 944.6657652450222, 612.6983955581646),
     (0.4977373598124163, -0.4936700173681212, -0.49550743704266875, 0.5128545743523507),
     (0.14706852359404365, 0.13320383159566518, 1.5298214057698232)),
)


def _ddad() -> Rig:
    names = [c[0] for c in _DDAD_CALIBRATION]
    K = np.stack([_K(*c[1]) for c in _DDAD_CALIBRATION])
    T = np.stack([_quaternion_transform(c[2], c[3]) for c in _DDAD_CALIBRATION])
    # The ego body, below the roof-mounted cameras (z ~ 1.53-1.58 m): a lower body with the hood
    # dropping out of the front camera's view, and a trunk / rear roof seen by the rear cameras.
    ego = np.array([
        # centre x, y, z, half length, half width, half height
        [0.075, 0.0, 0.71, 1.225, 0.96, 0.49],   # cabin and boot, x -1.15..1.30, z 0.22..1.20
        [2.25, 0.0, 0.585, 0.95, 0.96, 0.365],   # hood, x 1.30..3.20, z 0.22..0.95
    ])
    return Rig(
        name="ddad", camera_names=names, K=K, T_rig_cam=T, native_hw=(1216, 1936), image_hw=(1216, 1936),
        frame_rate_hz=10.0, T_rig_lidar=np.eye(4), lidar_rings=64, lidar_vfov_deg=(10.0, -25.0),
        lidar_azimuth_samples=2048, lidar_max_range=120.0, self_occlusion=True,
        # The merged Luminar cloud is given in the vehicle frame (extrinsic identity); the virtual
        # spinning sensor sits on the roof.
        T_lidar_sensor=_transform(np.eye(3), (1.0, 0.0, 1.95)), ego_boxes=ego,
    )


def _nuscenes() -> Rig:
    cams = (
        # name, yaw deg, position, (fx, fy, cx, cy)
        ("CAM_FRONT", 0.0, (1.70, 0.0, 1.51), (1266.4, 1266.4, 816.3, 491.5)),
        ("CAM_FRONT_LEFT", 55.0, (1.52, 0.49, 1.51), (1257.9, 1257.9, 827.2, 450.9)),
        ("CAM_FRONT_RIGHT", -55.0, (1.52, -0.49, 1.51), (1256.7, 1256.7, 817.8, 451.9)),
        ("CAM_BACK_LEFT", 110.0, (1.03, 0.48, 1.59), (1256.7, 1256.7, 792.1, 492.8)),
        ("CAM_BACK_RIGHT", -110.0, (1.03, -0.48, 1.59), (1259.5, 1259.5, 807.3, 501.2)),
        ("CAM_BACK", 180.0, (0.03, 0.0, 1.57), (809.2, 809.2, 829.2, 481.8)),
    )
    names = [c[0] for c in cams]
    K = np.stack([_K(*c[3]) for c in cams])
    T = np.stack([_yawed_camera(c[1], c[2]) for c in cams])
    # Only CAM_BACK sees the body: a boot whose lid (z 1.15 m) shows in its bottom rows; the hood is
    # below the front cameras' fields of view and the side cameras look outwards.
    ego = np.array([
        [0.15, 0.0, 0.685, 1.15, 0.95, 0.465],   # cabin and boot, x -1.00..1.30, z 0.22..1.15
        [2.25, 0.0, 0.56, 0.95, 0.95, 0.34],     # hood, x 1.30..3.20, z 0.22..0.90
    ])
    return Rig(
        name="nuscenes", camera_names=names, K=K, T_rig_cam=T, native_hw=(900, 1600), image_hw=(900, 1600),
        frame_rate_hz=12.0, T_rig_lidar=_transform(np.eye(3), (0.94, 0.0, 1.84)), lidar_rings=32,
        lidar_vfov_deg=(10.0, -30.0), lidar_azimuth_samples=1088, lidar_max_range=120.0,
        self_occlusion=True, ego_boxes=ego,
    )


def _kitti() -> Rig:
    K = _K(721.5377, 721.5377, 609.5593, 172.854)
    T_right = _transform(np.eye(3), (0.54, 0.0, 0.0))  # right camera 0.54 m along the left camera's x
    # The rig frame is the left rectified camera, 1.65 m above the road, looking forward.
    T_vehicle_rig = _yawed_camera(0.0, (1.60, 0.0, 1.65))
    # Velodyne (x forward, y left, z up) 1.73 m above the road, 0.27 m behind the camera.
    T_vehicle_lidar = _transform(np.eye(3), (1.60 - 0.27, 0.0, 1.73))
    T_rig_lidar = np.linalg.inv(T_vehicle_rig) @ T_vehicle_lidar
    ego = np.array([[1.35, 0.0, 0.62, 2.45, 0.90, 0.40]])  # only rendered if asked for
    return Rig(
        name="kitti", camera_names=["image_02", "image_03"], K=np.stack([K, K.copy()]),
        T_rig_cam=np.stack([np.eye(4), T_right]), native_hw=(375, 1242), image_hw=(375, 1242),
        frame_rate_hz=10.0, T_rig_lidar=T_rig_lidar, lidar_rings=64, lidar_vfov_deg=(2.0, -24.8),
        lidar_azimuth_samples=2048, lidar_max_range=120.0, self_occlusion=False,
        T_vehicle_rig=T_vehicle_rig, ego_boxes=ego,
    )


RIG_PRESETS: Dict[str, Rig] = {"ddad": _ddad(), "nuscenes": _nuscenes(), "kitti": _kitti()}


def get_rig(preset: Union[str, Rig], image_hw: Optional[Sequence[int]] = None) -> Rig:
    """The rig of a preset (or a copy of a custom :class:`Rig`) at ``image_hw`` (None: as it is)."""
    if isinstance(preset, Rig):
        return preset.validate().resized(image_hw)
    if preset not in RIG_PRESETS:
        raise ValueError(f"unknown rig preset {preset!r}; available: {', '.join(sorted(RIG_PRESETS))}")
    return RIG_PRESETS[preset].resized(image_hw)
