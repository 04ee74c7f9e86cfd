"""KITTI calibration text files -> intrinsics, stereo rig and lidar extrinsics.

File format (spec formats.md §1): one ``key: v1 v2 ...`` per line, floats in ``%e`` format,
row-major. Lines whose values are not all numbers (``calib_time: 09-Jan-2012 13:57:47``) are kept
as text and never used as numbers; asking for such a key, a missing key or a key with the wrong
number of values raises :class:`CalibrationError` naming the file and the key.

Frames (all OpenCV: x right, y down, z forward; ``T_a_b`` maps points from frame b into frame a):

- ``velo``: the Velodyne (x forward, y left, z up).
- ``cam0``: the *unrectified* grey left camera 0. ``calib_velo_to_cam.txt`` gives
  ``T_cam0_velo = [R | T]``.
- ``rect0``: the rectified camera 0, ``X_rect0 = R_rect_00 X_cam0``. Every rectified camera
  shares this orientation (that is what rectification means); they differ by translations only.
- ``cam2`` / ``cam3``: the rectified colour cameras (left ``image_02``, right ``image_03``).
  ``P_rect_0i = K_i [I | t_i]`` with ``t_i = K_i^-1 P_rect_0i[:, 3]``, so
  ``T_cam_i_rect0 = [I | t_i]``: a pure translation. For 2011_09_26, t_2 = (0.0599, -3.6e-4,
  2.7e-3) m and t_3 = (-0.4729, 2.4e-3, 2.7e-3) m.

What is composed:
``T_cam2_velo = T_cam2_rect0 @ R_rect_00 (as 4x4) @ T_cam0_velo``, so that
``K_2 @ T_cam2_velo[:3] == P_rect_02 @ R_rect_00 @ [R|T]``: exactly the projection monodepth2's
``generate_depth_map`` uses (the full column ``K^-1 P[:, 3]``, y and z included, not only
P[0, 3] / fx). ``T_cam3_velo`` likewise with ``P_rect_03``.

The stereo rig (the project's KITTI rig frame is the rectified left camera, DESIGN.md): left
extrinsics identity; right extrinsics ``T_rig_cam3`` = a translation by +baseline along x with
``baseline = (P_rect_02[0, 3] - P_rect_03[0, 3]) / fx`` (0.5327 m for 2011_09_26). The y/z
components of ``t_2 - t_3`` (about 3 mm and 0.02 mm for 2011_09_26) are left out on purpose: the
rectified image pair has horizontal epipolar lines by construction, which is the model every
stereo loss assumes; :attr:`StereoCalibration.T_cam2_cam3_full` keeps the exact vector.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np

PathLike = Union[str, os.PathLike]

__all__ = [
    "CalibrationError",
    "CalibFile",
    "read_calib_file",
    "parse_calib_text",
    "StereoCalibration",
    "read_cam_to_cam",
    "read_velo_to_cam",
    "read_stereo_calibration",
    "stereo_extrinsics",
    "WIDTH_TO_DATE",
    "DATE_INTRINSICS",
    "date_from_width",
    "fallback_calibration",
]


class CalibrationError(ValueError):
    """A calibration file that lacks a needed key or holds a malformed value (the message names both)."""


class CalibFile:
    """The parsed ``key: values`` lines of one calibration file.

    ``values`` maps each key whose values are all numbers to a float64 vector; ``text`` maps the
    others (``calib_time``, anything malformed) to their raw text.
    """

    def __init__(self, values: Dict[str, np.ndarray], text: Dict[str, str], source: str):
        self.values = values
        self.text = text
        self.source = source

    def __contains__(self, key: str) -> bool:
        return key in self.values

    def get(self, key: str, shape: Sequence[int]) -> np.ndarray:
        """The values of ``key`` reshaped to ``shape``; CalibrationError naming the file and the
        key when the key is missing, not numeric or has the wrong number of values."""
        count = int(np.prod(shape))
        if key not in self.values:
            if key in self.text:
                raise CalibrationError(
                    f"{self.source}: key '{key}' is not a list of numbers: '{self.text[key]}' "
                    f"(expected {count} floats)")
            raise CalibrationError(f"{self.source}: key '{key}' is missing (keys present: {sorted(self.values)})")
        vec = self.values[key]
        if vec.size != count:
            raise CalibrationError(
                f"{self.source}: key '{key}' has {vec.size} values, expected {count} (shape {tuple(shape)})")
        if not np.all(np.isfinite(vec)):
            raise CalibrationError(f"{self.source}: key '{key}' holds non-finite values: {vec.tolist()}")
        return vec.reshape(shape).copy()


def parse_calib_text(text: str, source: str = "<text>") -> CalibFile:
    """Parse the text of a KITTI calibration file (see the module docstring)."""
    values: Dict[str, np.ndarray] = {}
    raw: Dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or ":" not in line:
            continue
        key, rest = line.split(":", 1)
        key, rest = key.strip(), rest.strip()
        try:
            values[key] = np.array([float(v) for v in rest.split()], dtype=np.float64)
            raw.pop(key, None)
        except ValueError:
            raw[key] = rest  # calib_time and anything else that is not a list of floats
            values.pop(key, None)
    return CalibFile(values, raw, source)


def read_calib_file(path: PathLike) -> CalibFile:
    """Read and parse one KITTI calibration text file; FileNotFoundError naming it when absent."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"KITTI calibration file not found: {path}")
    return parse_calib_text(path.read_text(), str(path))


def _translation(t: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, 3] = t
    return T


@dataclass
class StereoCalibration:
    """The rectified colour stereo pair of one KITTI recording date (float64 numpy).

    ``K`` [2, 3, 3] for (image_02, image_03) at ``image_hw`` (the rectified size S_rect_02,
    (H, W)); ``T_rig_cam`` [2, 4, 4] with the rig = the left rectified camera; ``T_cam_velo``
    [2, 4, 4] (None without ``calib_velo_to_cam.txt``); ``baseline`` metres.
    """

    K: np.ndarray
    T_rig_cam: np.ndarray
    baseline: float
    image_hw: Optional[Tuple[int, int]]
    P_rect: Optional[np.ndarray] = None      # [2, 3, 4] P_rect_02, P_rect_03
    R_rect_00: Optional[np.ndarray] = None   # [3, 3]
    T_cam_velo: Optional[np.ndarray] = None  # [2, 4, 4] T_cam2_velo, T_cam3_velo
    source: str = ""

    @property
    def T_cam2_cam3_full(self) -> Optional[np.ndarray]:
        """The exact rectified offset [I | t_2 - t_3] (maps camera-3 points into camera 2), from P_rect."""
        if self.P_rect is None:
            return None
        t2 = np.linalg.solve(self.P_rect[0, :, :3], self.P_rect[0, :, 3])
        t3 = np.linalg.solve(self.P_rect[1, :, :3], self.P_rect[1, :, 3])
        return _translation(t2 - t3)


def read_cam_to_cam(path: PathLike, cameras: Sequence[str] = ("02", "03")) -> Dict[str, np.ndarray]:
    """``calib_cam_to_cam.txt`` -> {"P_rect": [2, 3, 4], "K": [2, 3, 3], "R_rect_00": [3, 3],
    "image_hw": (H, W) from S_rect_<first camera> (None when absent), "baseline": metres,
    "T_cam_rect0": [2, 4, 4]}."""
    calib = read_calib_file(path)
    P = np.stack([calib.get(f"P_rect_{c}", (3, 4)) for c in cameras])
    K = P[:, :, :3].copy()
    fx = K[0, 0, 0]
    if not fx > 0:
        raise CalibrationError(f"{calib.source}: P_rect_{cameras[0]} has a non-positive focal length {fx}")
    R_rect = calib.get("R_rect_00", (3, 3)) if "R_rect_00" in calib or "R_rect_00" in calib.text else np.eye(3)
    image_hw = None
    s_key = f"S_rect_{cameras[0]}"
    if s_key in calib or s_key in calib.text:
        w, h = calib.get(s_key, (2,))
        image_hw = (int(round(h)), int(round(w)))
    T_cam_rect0 = np.stack([_translation(np.linalg.solve(P[i, :, :3], P[i, :, 3])) for i in range(len(cameras))])
    baseline = float((P[0, 0, 3] - P[1, 0, 3]) / fx)
    return {"P_rect": P, "K": K, "R_rect_00": R_rect, "image_hw": image_hw, "baseline": baseline,
            "T_cam_rect0": T_cam_rect0, "source": calib.source}


def read_velo_to_cam(path: PathLike) -> np.ndarray:
    """``calib_velo_to_cam.txt`` -> T_cam0_velo [4, 4] (unrectified camera 0 <- velodyne)."""
    calib = read_calib_file(path)
    T = np.eye(4)
    T[:3, :3] = calib.get("R", (3, 3))
    T[:3, 3] = calib.get("T", (3,))
    return T


def stereo_extrinsics(baseline: float) -> np.ndarray:
    """T_rig_cam [2, 4, 4] of a rectified pair: left identity, right +baseline along x."""
    T = np.stack([np.eye(4), np.eye(4)])
    T[1, 0, 3] = baseline
    return T


def read_stereo_calibration(cam_to_cam: PathLike, velo_to_cam: Optional[PathLike] = None) -> StereoCalibration:
    """The stereo pair (and, given ``calib_velo_to_cam.txt``, the lidar extrinsics) of one date.

    ``T_cam_velo[i] = T_cam_i_rect0 @ R_rect_00 @ T_cam0_velo`` (module docstring).
    """
    c2c = read_cam_to_cam(cam_to_cam)
    baseline = c2c["baseline"]
    if not baseline > 0:
        raise CalibrationError(
            f"{c2c['source']}: stereo baseline (P_rect_02[0,3] - P_rect_03[0,3]) / fx = {baseline:.4f} m "
            f"is not positive (is image_03 really to the right of image_02?)")
    T_cam_velo = None
    if velo_to_cam is not None:
        T_cam0_velo = read_velo_to_cam(velo_to_cam)
        R4 = np.eye(4)
        R4[:3, :3] = c2c["R_rect_00"]
        T_cam_velo = np.stack([c2c["T_cam_rect0"][i] @ R4 @ T_cam0_velo for i in range(2)])
    return StereoCalibration(K=c2c["K"], T_rig_cam=stereo_extrinsics(baseline), baseline=baseline,
                             image_hw=c2c["image_hw"], P_rect=c2c["P_rect"], R_rect_00=c2c["R_rect_00"],
                             T_cam_velo=T_cam_velo, source=str(cam_to_cam))


# ---------------------------------------------------------------------------------------------
# multi-mono-sf's fallback: the image width identifies the recording date (KITTI 2015 images come
# from these five days), and K is that date's P_rect_02[:3, :3].
WIDTH_TO_DATE = {1242: "2011_09_26", 1224: "2011_09_28", 1238: "2011_09_29", 1226: "2011_09_30", 1241: "2011_10_03"}

# (fx, cx, cy, baseline, (H, W)) per date. fx = fy. Sources: 2011_09_26 from the real
# calib_cam_to_cam.txt in ../shared/data/kitti_raw_tiny; fx, cx, cy of the other four dates are
# P_rect_02 of those days' calib_cam_to_cam.txt as quoted verbatim in public code (KITTI's own
# values; the fx agree with spec formats.md §1). The baselines are (P2[0,3] - P3[0,3]) / fx rounded
# to 0.1 mm (formats.md §1); only 2011_09_26's is exact to the file's precision. KITTI's rectified
# colour cameras share one K, so the right K equals the left K.
DATE_INTRINSICS = {
    "2011_09_26": (7.215377e+02, 6.095593e+02, 1.728540e+02, (4.485728e+01 + 3.395242e+02) / 7.215377e+02, (375, 1242)),
    "2011_09_28": (7.070493e+02, 6.040814e+02, 1.805066e+02, 0.5373, (370, 1224)),
    "2011_09_29": (7.183351e+02, 6.003891e+02, 1.815122e+02, 0.5301, (374, 1238)),
    "2011_09_30": (7.070912e+02, 6.018873e+02, 1.831104e+02, 0.5379, (370, 1226)),
    "2011_10_03": (7.188560e+02, 6.071928e+02, 1.852157e+02, 0.5323, (376, 1241)),
}


def date_from_width(width: int, what: str = "image") -> str:
    """The KITTI recording date of an image ``width`` pixels wide (multi-mono-sf's width_to_date)."""
    if int(width) not in WIDTH_TO_DATE:
        raise CalibrationError(
            f"{what}: width {width} px matches no KITTI recording date (known widths: "
            f"{ {w: d for w, d in WIDTH_TO_DATE.items()} }); provide the calibration file instead")
    return WIDTH_TO_DATE[int(width)]


def fallback_calibration(width: int, what: str = "image") -> StereoCalibration:
    """The stereo calibration of the date that the image width identifies (no lidar extrinsics).

    Used where a KITTI 2015 scene has no ``calib_cam_to_cam`` file (multi-mono-sf always does
    this). K is exact; the baseline is exact for 2011_09_26 and rounded to 0.1 mm otherwise.
    """
    date = date_from_width(width, what)
    fx, cx, cy, baseline, image_hw = DATE_INTRINSICS[date]
    K = np.array([[fx, 0.0, cx], [0.0, fx, cy], [0.0, 0.0, 1.0]])
    return StereoCalibration(K=np.stack([K, K]), T_rig_cam=stereo_extrinsics(baseline), baseline=float(baseline),
                             image_hw=image_hw, source=f"fallback intrinsics of {date} (image width {width})")
