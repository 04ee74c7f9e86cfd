"""KITTI calibration files for a synthetic rectified stereo rig (shared by the KITTI raw and
KITTI 2015 writers), in the exact text format of the real files: ``key: v1 v2 ...`` with ``%e``
floats, row-major, and a ``calib_time`` line that is not a float.

Frames, as in real KITTI: camera 0 (grey, left) is the rectified reference; camera 2 (colour
left, ``image_02`` = the rig's first camera) sits ``cam0_offset_m`` to its left and camera 3
(colour right) the stereo baseline b to the right of camera 2; camera 1 (grey right) is b to the
right of camera 0. So ``P_rect_xx = K_xx [I | -c_xx]`` with the camera centres c_xx in camera 0:
``P_rect_02[0, 3] = fx * offset`` and ``P_rect_03[0, 3] = -fx * (b - offset)``, which is
``-fx * b`` with the default offset 0, and in every case ``b = (P2[0,3] - P3[0,3]) / fx``.
The images are rendered rectified and undistorted: R_rect_xx = R_xx = I, D_xx = 0, S = S_rect.

The velodyne frame has its origin at the rendered lidar and the KITTI axes x forward, y left,
z up, taken relative to camera 2 (forward = its z axis, left = -x, up = -y), like the real
velodyne, which is mounted level with the cameras. ``calib_velo_to_cam.txt`` maps it into
camera 0 (unrectified = rectified here); the IMU is mounted as in the real car.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np

from dataset.synthetic.sequence import SyntheticSequence

from ._common import invert

__all__ = ["StereoRig", "stereo_rig", "format_calib", "calib_cam_to_cam_text", "calib_velo_to_cam_text",
           "calib_imu_to_velo_text", "parse_calib_text", "R_CAM_VELO"]

# Columns: the velodyne's x (forward), y (left), z (up) axes expressed in the OpenCV camera frame.
R_CAM_VELO = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
# T_velo_imu of the real 2011_09_26 recording, rounded; rotation kept exactly identity.
_T_VELO_IMU_TRANSLATION = np.array([-8.086759e-01, 3.195559e-01, -7.997231e-01])
_CAM_TO_CAM_TIME = "09-Jan-2012 13:57:47"
_VELO_TO_CAM_TIME = "15-Mar-2012 11:37:16"
_IMU_TO_VELO_TIME = "25-May-2012 16:47:16"
_CORNER_DIST = 9.95e-02
_STEREO_TOL = 1e-6


@dataclass
class StereoRig:
    left: int                      # index of the left colour camera (image_02) in the sequence
    right: int                     # index of the right colour camera (image_03)
    K2: np.ndarray                 # [3, 3] left intrinsics
    K3: np.ndarray                 # [3, 3] right intrinsics
    baseline: float                # metres, camera 3 centre = camera 2 centre + baseline * x
    image_hw: Tuple[int, int]
    T_cam2_velo: np.ndarray        # [4, 4]
    T_velo_lidar: np.ndarray       # [4, 4] rendered lidar frame -> velodyne frame
    T_velo_imu: np.ndarray         # [4, 4]
    cam0_offset: float             # metres, camera 2 centre = camera 0 centre - offset * x

    @property
    def T_cam0_cam2(self) -> np.ndarray:
        T = np.eye(4)
        T[0, 3] = -self.cam0_offset
        return T

    @property
    def T_cam0_velo(self) -> np.ndarray:
        return self.T_cam0_cam2 @ self.T_cam2_velo

    def centres(self) -> Dict[str, np.ndarray]:
        """Camera centres of cameras 00..03 in the rectified camera-0 frame."""
        b, d = self.baseline, self.cam0_offset
        return {"00": np.zeros(3), "01": np.array([b, 0.0, 0.0]), "02": np.array([-d, 0.0, 0.0]),
                "03": np.array([b - d, 0.0, 0.0])}

    def P_rect(self, cam: str) -> np.ndarray:
        K = self.K3 if cam in ("01", "03") else self.K2
        return K @ np.hstack([np.eye(3), -self.centres()[cam][:, None]])


def _stereo_indices(camera_names: Sequence[str]) -> Tuple[int, int]:
    names = list(camera_names)
    if "image_02" in names and "image_03" in names:
        return names.index("image_02"), names.index("image_03")
    if len(names) < 2:
        raise ValueError(f"KITTI needs a stereo pair, the sequence has cameras {names}")
    return 0, 1


def stereo_rig(seq: SyntheticSequence, cam0_offset_m: float = 0.0) -> StereoRig:
    """The KITTI stereo calibration of a sequence; raises if its two cameras are not rectified."""
    left, right = _stereo_indices(seq.camera_names)
    T_rig_cam = np.asarray(seq.T_rig_cam, dtype=np.float64)
    T_cam2_cam3 = invert(T_rig_cam[left]) @ T_rig_cam[right]
    baseline = float(T_cam2_cam3[0, 3])
    if (not np.allclose(T_cam2_cam3[:3, :3], np.eye(3), atol=_STEREO_TOL)
            or abs(T_cam2_cam3[1, 3]) > _STEREO_TOL or abs(T_cam2_cam3[2, 3]) > _STEREO_TOL or baseline <= 0):
        raise ValueError(
            f"sequence '{seq.name}': KITTI needs a rectified stereo pair (right camera = left camera shifted "
            f"along +x), got T_left_right =\n{np.array2string(T_cam2_cam3, precision=6)}")
    K2 = np.asarray(seq.K[left], dtype=np.float64)
    K3 = np.asarray(seq.K[right], dtype=np.float64)
    if not np.allclose(K2, K3, rtol=1e-9, atol=1e-9):
        raise ValueError(f"sequence '{seq.name}': rectified KITTI cameras share K, got\n{K2}\nand\n{K3}")
    T_cam2_lidar = invert(T_rig_cam[left]) @ np.asarray(seq.T_rig_lidar, dtype=np.float64)
    T_cam2_velo = np.eye(4)
    T_cam2_velo[:3, :3] = R_CAM_VELO
    T_cam2_velo[:3, 3] = T_cam2_lidar[:3, 3]
    T_velo_imu = np.eye(4)
    T_velo_imu[:3, 3] = _T_VELO_IMU_TRANSLATION
    return StereoRig(left=left, right=right, K2=K2, K3=K3, baseline=baseline, image_hw=tuple(seq.image_hw),
                     T_cam2_velo=T_cam2_velo, T_velo_lidar=invert(T_cam2_velo) @ T_cam2_lidar,
                     T_velo_imu=T_velo_imu, cam0_offset=float(cam0_offset_m))


def format_calib(key: str, values) -> str:
    return f"{key}: " + " ".join("%e" % (float(v) + 0.0) for v in np.asarray(values, dtype=np.float64).ravel())


def calib_cam_to_cam_text(rig: StereoRig) -> str:
    H, W = rig.image_hw
    lines = [f"calib_time: {_CAM_TO_CAM_TIME}", format_calib("corner_dist", [_CORNER_DIST])]
    centres = rig.centres()
    for cam in ("00", "01", "02", "03"):
        K = rig.K3 if cam in ("01", "03") else rig.K2
        lines += [
            format_calib(f"S_{cam}", [W, H]),
            format_calib(f"K_{cam}", K),
            format_calib(f"D_{cam}", np.zeros(5)),
            format_calib(f"R_{cam}", np.eye(3)),
            format_calib(f"T_{cam}", -centres[cam]),
            format_calib(f"S_rect_{cam}", [W, H]),
            format_calib(f"R_rect_{cam}", np.eye(3)),
            format_calib(f"P_rect_{cam}", rig.P_rect(cam)),
        ]
    return "\n".join(lines) + "\n"


def calib_velo_to_cam_text(rig: StereoRig) -> str:
    T = rig.T_cam0_velo
    return "\n".join([f"calib_time: {_VELO_TO_CAM_TIME}", format_calib("R", T[:3, :3]), format_calib("T", T[:3, 3]),
                      format_calib("delta_f", [0.0, 0.0]), format_calib("delta_c", [0.0, 0.0])]) + "\n"


def calib_imu_to_velo_text(rig: StereoRig) -> str:
    T = rig.T_velo_imu
    return "\n".join([f"calib_time: {_IMU_TO_VELO_TIME}", format_calib("R", T[:3, :3]), format_calib("T", T[:3, 3])]) + "\n"


def parse_calib_text(text: str) -> Dict[str, np.ndarray]:
    """``key: floats`` lines -> {key: float64 array}; lines whose values are not floats are skipped."""
    out: Dict[str, np.ndarray] = {}
    for line in text.splitlines():
        if ":" not in line:
            continue
        key, value = line.split(":", 1)
        try:
            out[key.strip()] = np.array([float(v) for v in value.split()], dtype=np.float64)
        except ValueError:
            continue
    return out


def pose_lines(T_first_t: np.ndarray) -> List[str]:
    """[T, 4, 4] poses -> one line of 12 '%e' values (3x4 row-major) per frame (poses.txt)."""
    return [" ".join("%e" % (float(v) + 0.0) for v in T[:3, :4].ravel()) for T in T_first_t]
