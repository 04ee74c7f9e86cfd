"""KITTI raw as a two-camera rig: :class:`KittiRawDataset`.

Layout (spec formats.md §1)::

    <root>/<date>/calib_cam_to_cam.txt  calib_velo_to_cam.txt  calib_imu_to_velo.txt
    <root>/<date>/<drive>/image_02/data/%010d.png|.jpg     left colour camera
                          image_03/data/%010d.png|.jpg     right colour camera
                          proj_depth/velodyne/image_0X/%010d.npz   (optional, key velodyne_depth)
                          velodyne_points/data/%010d.bin            (optional, float32 N x 4)
                          oxts/data/%010d.txt                       (optional, GPS/IMU)
                          image_02/poses.txt or poses.txt           (optional, 3x4 per frame)

The rig. Cameras are ``cameras`` (default ``("image_02", "image_03")``, left first); the rig frame
is the first camera's rectified frame, so its extrinsics are the identity and the right camera's
are a translation by +baseline along x, the baseline from P_rect_02/03 (see
:mod:`dataset.kitti_calib`). A sample always holds the pair in [left, right] order: the side
``l``/``r`` of a monodepth2 split line only records which list the item came from (monodepth2
lists most frames twice, once per side; they give the same sample here, except for the random
augmentation draw, and ``meta["side"]`` keeps the side).

Items come from ``split``: a frames split (``<date>/<drive> <frame> <l|r>``, monodepth2 / packnet
style), a multi-mono-sf scene list (drive names, e.g. ``2011_09_26_drive_0023_sync``: every frame
of those drives) or, with no split, every drive found under the root (``<date>/<drive>`` folders
holding ``image_02/data``). Context frames are ``frame + offset`` for ``offset`` in ``frame_ids``;
an item whose context leaves its drive (before the first or after the last frame) is excluded
(``num_excluded`` counts them). A frame named in a split, or a context frame inside the drive,
whose image is missing is an error naming the file, raised by the constructor.

Ground truth (``requirements``):

- ``gt_depth``: per camera, the target frame's lidar depth at the original image resolution
  (``depth_gt`` [N, 1, H0, W0], 0 = no return): ``proj_depth/velodyne/image_0X/%010d.npz`` if
  present (read as stored), else projected from ``velodyne_points/data/%010d.bin`` with
  ``T_cam_velo = T_cam_rect0 @ R_rect_00 @ T_cam0_velo`` and K (= monodepth2's P_rect_0X @ R_rect_00
  @ [R|T]), nearest point per pixel (points with camera z <= 1e-3 dropped, pixel = nearest pixel
  centre), cached as that npz (atomic write; skipped when the folder is read-only). With
  ``monodepth2_pixel_offset=True`` the pixel is ``round(u) - 1`` as in monodepth2's
  ``generate_depth_map`` ("to match the KITTI MATLAB code"; the reference behaviour, off by
  default), cached under ``proj_depth/velodyne_md2/``. monodepth2's Eigen export also replaces
  the camera z by the velodyne x (``vel_depth=True``); that is not reproduced.
- ``gt_pose``: ``pose_gt`` [T, 4, 4] = T_rig(target)_rig(frame t). Sources (``pose_source``):
  ``"oxts"``: the GPS/IMU packets, converted as pykitti / the KITTI devkit do (Mercator
  projection with the scale of the drive's first packet, R = Rz(yaw) Ry(pitch) Rx(roll)), moved
  into the rig camera with ``T_cam_imu = T_cam_velo @ T_velo_imu``; ``"poses_txt"``: one
  row-major 3x4 line per frame (line i = frame i), read as the pose of the rig camera at frame i
  in its frame-0 camera frame, ``T_cam(0)_cam(i)``, so ``pose_gt[t] = P[target]^-1 @ P[t]``;
  ``"auto"`` (default): oxts when the drive has ``oxts/data``, else poses.txt. Checked on the
  real sample kitti_raw_tiny (tests/test_dataset_kitti_raw.py): with the projected lidar depth,
  warping frame 4 into frame 3 with the oxts pose leaves a mean photometric error of about 0.067
  at the lidar pixels (0.22 without motion), while the sample's poses.txt (packnet-sfm's fixture,
  not part of the KITTI download) gives 0.196: its motion (0.46 m and 1.2 degrees per frame) does
  not match the oxts packets (0.88 m, 0.1 degrees), hence the oxts preference.

Training augmentation (``augment=True``), all drawn from ``numpy.random.default_rng((seed,
epoch, index))`` so runs are reproducible (call :meth:`set_epoch` each epoch; with persistent
DataLoader workers, recreate the loader): an optional fixed-size random crop ``crop_hw`` (the
reference crops KITTI to 370 x 1224), then multi-mono-sf's scale crop (scale s ~ U[crop_scale],
crop floor(H s) x floor(W s) at a uniformly random integer offset; the reference's sub-pixel
translation is rounded to whole pixels so that K follows exactly), resampled to ``image_hw``;
a horizontal flip with probability ``flip_prob`` followed by the stereo swap
(:func:`dataset.transforms.flip_sample`: the flipped right image becomes the left camera,
extrinsics stay [I, +b], pose_gt follows); colour jitter into ``image_aug`` with probability
``color_jitter_prob``, one draw shared by all frames and both cameras (multi-mono-sf style;
torchvision-style factors ``color_jitter_strengths``), else ``image_aug`` is a copy of ``image``.
With augmentation, ``depth_gt`` is cropped like the images and moved to ``image_hw`` with
:func:`dataset.transforms.resize_sparse_depth` (so batches collate).
"""
from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from geometry import points_to_depth_map, resize_intrinsics
from utils.atomic import save_npz_atomic

from .image_io import read_image
from .kitti_calib import StereoCalibration, read_calib_file, read_stereo_calibration
from .splits import detect_split_format, read_frame_split, read_scene_list
from .transforms import (apply_color_jitter, crop_views, draw_color_jitter, draw_crop_box, flip_sample,
                         resize_sparse_depth, resize_views)

PathLike = Union[str, os.PathLike]

__all__ = ["KittiRawDataset", "oxts_to_pose", "read_oxts_packet", "read_poses_txt", "KITTI_CAMERAS"]

KITTI_CAMERAS = ("image_02", "image_03")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
REQUIREMENTS = ("gt_depth", "gt_pose", "mask")
_REQUIREMENT_ALIASES = {"depth_gt": "gt_depth", "pose_gt": "gt_pose"}
_DATE = re.compile(r"^\d{4}_\d{2}_\d{2}$")
_EARTH_RADIUS = 6378137.0


# ---------------------------------------------------------------------------------------------
# oxts and poses.txt
def read_oxts_packet(path: PathLike) -> np.ndarray:
    """One oxts packet (30 numbers: lat lon alt roll pitch yaw ...) as float64 [30]."""
    path = Path(path)
    try:
        values = np.array([float(v) for v in path.read_text().split()], dtype=np.float64)
    except FileNotFoundError:
        raise FileNotFoundError(f"oxts packet not found: {path}") from None
    except ValueError:
        raise ValueError(f"{path}: an oxts packet must hold 30 numbers; found non-numeric text") from None
    if values.size < 6:
        raise ValueError(f"{path}: an oxts packet must hold 30 numbers (lat lon alt roll pitch yaw ...), got {values.size}")
    return values


def oxts_to_pose(packet: np.ndarray, mercator_scale: float) -> np.ndarray:
    """T_world_imu [4, 4] of one packet (KITTI devkit ``convertOxtsToPose`` / pykitti): Mercator
    x east, y north with ``mercator_scale = cos(lat0)``, z = altitude, R = Rz(yaw) Ry(pitch) Rx(roll)."""
    lat, lon, alt, roll, pitch, yaw = packet[:6]
    tx = mercator_scale * np.deg2rad(lon) * _EARTH_RADIUS
    ty = mercator_scale * _EARTH_RADIUS * np.log(np.tan(np.deg2rad(90.0 + lat) / 2.0))
    cr, sr, cp, sp, cy, sy = np.cos(roll), np.sin(roll), np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw)
    Rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    Ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    Rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    T = np.eye(4)
    T[:3, :3] = Rz @ Ry @ Rx
    T[:3, 3] = (tx, ty, alt)
    return T


def read_poses_txt(path: PathLike) -> np.ndarray:
    """poses.txt -> [L, 4, 4] float64, line i = 3x4 row-major pose of frame i."""
    path = Path(path)
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            values = [float(v) for v in line.split()]
        except ValueError:
            raise ValueError(f"{path}, line {number}: a pose line must hold 12 numbers, found non-numeric text") from None
        if len(values) != 12:
            raise ValueError(f"{path}, line {number}: a pose line must hold 12 numbers (3x4 row-major), got {len(values)}")
        T = np.eye(4)
        T[:3, :] = np.reshape(values, (3, 4))
        rows.append(T)
    return np.stack(rows) if rows else np.zeros((0, 4, 4))


def _atomic_save_npz(path: Path, **arrays) -> bool:
    """save_npz_atomic; False (with a warning) when the folder cannot be written."""
    try:
        save_npz_atomic(path, **arrays)
        return True
    except OSError as err:
        warnings.warn(f"cannot cache the projected depth at {path}: {err}")
        return False


# ---------------------------------------------------------------------------------------------
@dataclass
class _Drive:
    key: str                                   # "<date>/<drive>"
    date: str
    path: Path
    frames: Dict[str, Dict[int, Path]] = field(default_factory=dict)   # camera -> frame -> file
    first: int = 0
    last: int = -1


def _normalise_requirements(requirements) -> Tuple[str, ...]:
    if requirements is None:
        return ()
    if isinstance(requirements, str):
        requirements = [r for r in re.split(r"[\s,()\[\]]+", requirements) if r]
    out = []
    for r in requirements:
        r = _REQUIREMENT_ALIASES.get(r, r)
        if r not in REQUIREMENTS:
            raise ValueError(f"unknown data requirement '{r}'; KITTI raw offers {REQUIREMENTS}")
        out.append(r)
    return tuple(dict.fromkeys(out))


def _check_frame_ids(frame_ids: Sequence[int]) -> Tuple[int, ...]:
    ids = tuple(int(f) for f in frame_ids)
    if 0 not in ids:
        raise ValueError(f"frame_ids {list(ids)} must contain the target frame 0")
    if len(set(ids)) != len(ids):
        raise ValueError(f"frame_ids {list(ids)} repeats an offset")
    return ids


class KittiRawDataset(Dataset):
    """KITTI raw stereo sequences as contract samples (see the module docstring).

    Args:
        data_path: the root holding the ``<date>`` folders.
        split: a split file (frames or scene list, detected from its first line) or None (all drives).
        frame_ids: offsets of the frames, in sample order, with the target 0 (e.g. [0, -1, 1] or
            the multi-frame window [-3, -2, -1, 0, 1]).
        image_hw: (H, W) of the returned images (K scaled to it); None keeps the original size.
        requirements: any of "gt_depth", "gt_pose", "mask" (the mask, all ones, is always given).
        convention: intrinsics convention under resize/flip ("half_pixel" or "reference").
        augment, crop_hw, crop_scale, flip_prob, color_jitter_prob, color_jitter_strengths, seed:
            training augmentation (module docstring).
        cameras: the rig's cameras, first = rig frame; ("image_02", "image_03") or one of them.
        pose_source: "auto", "oxts" or "poses_txt".
        monodepth2_pixel_offset: project lidar points with monodepth2's round(u) - 1.
        cache_depth: cache depth maps computed from velodyne .bin files as npz.
        target_stride: keep every k-th frame of each drive as a target (scene lists / no split).
        image_ext: preferred image suffix when a frame exists as both .png and .jpg.
    """

    def __init__(
        self,
        data_path: PathLike,
        split: Optional[PathLike] = None,
        frame_ids: Sequence[int] = (0, -1, 1),
        image_hw: Optional[Sequence[int]] = None,
        requirements: Union[str, Sequence[str], None] = (),
        convention: str = "half_pixel",
        augment: bool = False,
        crop_hw: Optional[Sequence[int]] = None,
        crop_scale: Sequence[float] = (0.93, 1.0),
        flip_prob: float = 0.5,
        color_jitter_prob: float = 0.5,
        color_jitter_strengths: Sequence[float] = (0.2, 0.2, 0.2, 0.05),
        seed: int = 0,
        cameras: Sequence[str] = KITTI_CAMERAS,
        pose_source: str = "auto",
        monodepth2_pixel_offset: bool = False,
        cache_depth: bool = True,
        target_stride: int = 1,
        image_ext: Optional[str] = None,
    ):
        self.root = Path(data_path)
        if not self.root.is_dir():
            raise FileNotFoundError(f"KITTI raw root not found: {self.root}")
        self.frame_ids = _check_frame_ids(frame_ids)
        self.image_hw = None if image_hw is None else (int(image_hw[0]), int(image_hw[1]))
        self.requirements = _normalise_requirements(requirements)
        self.convention = convention
        self.augment = bool(augment)
        self.crop_hw = None if crop_hw is None else (int(crop_hw[0]), int(crop_hw[1]))
        self.crop_scale = (float(crop_scale[0]), float(crop_scale[1]))
        if not 0.0 < self.crop_scale[0] <= self.crop_scale[1] <= 1.0:
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {crop_scale}")
        self.flip_prob = float(flip_prob)
        self.color_jitter_prob = float(color_jitter_prob)
        self.color_jitter_strengths = tuple(float(s) for s in color_jitter_strengths)
        self.seed = int(seed)
        self.epoch = 0
        self.cameras = tuple(cameras)
        if not self.cameras or len(set(self.cameras)) != len(self.cameras) or any(c not in KITTI_CAMERAS for c in self.cameras):
            raise ValueError(f"cameras must be distinct names from {KITTI_CAMERAS}, got {list(cameras)}")
        if pose_source not in ("auto", "oxts", "poses_txt"):
            raise ValueError(f"pose_source must be 'auto', 'oxts' or 'poses_txt', got '{pose_source}'")
        self.pose_source = pose_source
        self.monodepth2_pixel_offset = bool(monodepth2_pixel_offset)
        self.cache_depth = bool(cache_depth)
        if int(target_stride) < 1:
            raise ValueError(f"target_stride must be >= 1, got {target_stride}")
        self.target_stride = int(target_stride)
        self.image_ext = image_ext
        self.split = None if split is None else Path(split)

        self._drives: Dict[str, _Drive] = {}
        self._calib: Dict[str, StereoCalibration] = {}
        self._poses: Dict[str, Dict[int, np.ndarray]] = {}
        self.items: List[Tuple[str, int, str]] = []
        self.num_excluded = 0
        self._build_items()
        if not self.items:
            raise ValueError(
                f"KITTI raw: no sample with frame_ids {list(self.frame_ids)} under {self.root}"
                + (f" for split {self.split}" if self.split else "")
                + f" ({self.num_excluded} excluded because their context leaves the drive)")

    # ----------------------------------------------------------------------------- indexing
    def _drive(self, key: str) -> _Drive:
        """Index the drive folder ``<date>/<drive>`` (cached): the image files of each camera."""
        if key in self._drives:
            return self._drives[key]
        path = self.root / key
        if not path.is_dir():
            raise FileNotFoundError(f"KITTI raw drive folder not found: {path}")
        date = Path(key).parts[0]
        drive = _Drive(key=key, date=date, path=path)
        for cam in self.cameras:
            folder = path / cam / "data"
            if not folder.is_dir():
                raise FileNotFoundError(f"KITTI raw camera folder not found: {folder}")
            files: Dict[int, Path] = {}
            for entry in os.scandir(folder):
                stem, suffix = os.path.splitext(entry.name)
                if suffix.lower() not in IMAGE_SUFFIXES or not stem.isdigit():
                    continue
                frame = int(stem)
                if frame in files and not self._prefer(suffix, files[frame].suffix):
                    continue
                files[frame] = Path(entry.path)
            drive.frames[cam] = files
        ref = drive.frames[self.cameras[0]]
        if not ref:
            raise FileNotFoundError(
                f"KITTI raw: no images ({', '.join(IMAGE_SUFFIXES)}) in {path / self.cameras[0] / 'data'}")
        drive.first, drive.last = min(ref), max(ref)
        self._drives[key] = drive
        return drive

    def _prefer(self, new_suffix: str, old_suffix: str) -> bool:
        """Whether a frame stored as both ``old_suffix`` and ``new_suffix`` should use the new one."""
        if self.image_ext is not None:
            return new_suffix.lower() == self.image_ext.lower()
        return new_suffix.lower() == ".png" and old_suffix.lower() != ".png"

    def _expected_file(self, drive: _Drive, cam: str, frame: int) -> Path:
        files = drive.frames[cam]
        suffix = self.image_ext or (next(iter(files.values())).suffix if files else ".png")
        return drive.path / cam / "data" / f"{frame:010d}{suffix}"

    def _add_item(self, drive: _Drive, frame: int, side: str, named: bool) -> None:
        for cam in self.cameras:
            if frame not in drive.frames[cam]:
                what = f"named in split {self.split}" if named else "listed for camera " + self.cameras[0]
                raise FileNotFoundError(f"KITTI raw: image of frame {frame} ({what}) not found: "
                                        f"{self._expected_file(drive, cam, frame)}")
        for offset in self.frame_ids:
            f = frame + offset
            if f < drive.first or f > drive.last:
                self.num_excluded += 1
                return
        for offset in self.frame_ids:
            for cam in self.cameras:
                if frame + offset not in drive.frames[cam]:
                    raise FileNotFoundError(
                        f"KITTI raw: context frame {frame + offset} (offset {offset} of frame {frame}) of drive "
                        f"{drive.key} lies inside the drive but its image is missing: "
                        f"{self._expected_file(drive, cam, frame + offset)}")
        self.items.append((drive.key, frame, side))

    def _all_frames(self, drive: _Drive) -> None:
        for frame in sorted(drive.frames[self.cameras[0]]):
            if (frame - drive.first) % self.target_stride == 0:
                self._add_item(drive, frame, "l", named=False)

    def _discover_drives(self) -> List[str]:
        keys = []
        for date_dir in sorted(p for p in self.root.iterdir() if p.is_dir() and _DATE.match(p.name)):
            for drive_dir in sorted(p for p in date_dir.iterdir() if p.is_dir()):
                if (drive_dir / self.cameras[0] / "data").is_dir():
                    keys.append(f"{date_dir.name}/{drive_dir.name}")
        if not keys:
            raise FileNotFoundError(
                f"KITTI raw: no drive found under {self.root} (expected <date>/<drive>/{self.cameras[0]}/data, "
                f"with <date> like 2011_09_26)")
        return keys

    def _build_items(self) -> None:
        if self.split is None:
            for key in self._discover_drives():
                self._all_frames(self._drive(key))
            return
        fmt = detect_split_format(self.split)
        if fmt == "frames":
            for entry in read_frame_split(self.split):
                self._add_item(self._drive(entry.folder), entry.frame, entry.side, named=True)
        elif fmt == "scenes":
            for name in read_scene_list(self.split):
                key = name if "/" in name else f"{name[:10]}/{name}"
                self._all_frames(self._drive(key))
        else:
            raise ValueError(f"split {self.split} looks like a nuScenes token list, not a KITTI split")

    # ----------------------------------------------------------------------------- calibration
    def calibration(self, date: str) -> StereoCalibration:
        """The stereo calibration of a date folder (cached); lidar extrinsics when the file exists."""
        if date not in self._calib:
            folder = self.root / date
            velo = folder / "calib_velo_to_cam.txt"
            self._calib[date] = read_stereo_calibration(folder / "calib_cam_to_cam.txt",
                                                        velo if velo.is_file() else None)
        return self._calib[date]

    def _camera_index(self, cam: str) -> int:
        return KITTI_CAMERAS.index(cam)

    def _native_geometry(self, date: str) -> Tuple[np.ndarray, np.ndarray]:
        """K [N, 3, 3] at the original size and T_rig_cam [N, 4, 4] of the configured cameras."""
        calib = self.calibration(date)
        idx = [self._camera_index(c) for c in self.cameras]
        K = calib.K[idx]
        E = calib.T_rig_cam[idx]
        E = np.linalg.inv(E[0]) @ E  # the rig is the first configured camera
        return K, E

    # ----------------------------------------------------------------------------- ground truth
    def _depth_map(self, drive: _Drive, cam: str, frame: int, image_hw: Tuple[int, int]) -> np.ndarray:
        folder = "velodyne_md2" if self.monodepth2_pixel_offset else "velodyne"
        npz = drive.path / "proj_depth" / folder / cam / f"{frame:010d}.npz"
        if npz.is_file():
            with np.load(npz) as data:
                if "velodyne_depth" not in data:
                    raise KeyError(f"{npz}: key 'velodyne_depth' missing (keys: {list(data.keys())})")
                depth = data["velodyne_depth"].astype(np.float32)
            if depth.shape != tuple(image_hw):
                raise ValueError(f"{npz}: depth map is {depth.shape}, the images are {tuple(image_hw)}")
            return depth
        binary = drive.path / "velodyne_points" / "data" / f"{frame:010d}.bin"
        if not binary.is_file():
            raise FileNotFoundError(f"KITTI raw: no lidar depth for frame {frame} of {drive.key}: neither {npz} "
                                    f"nor {binary} exists")
        calib = self.calibration(drive.date)
        if calib.T_cam_velo is None:
            raise FileNotFoundError(f"KITTI raw: {self.root / drive.date / 'calib_velo_to_cam.txt'} is needed to "
                                    f"project {binary}")
        raw = np.fromfile(binary, dtype=np.float32)
        if raw.size % 4:
            raise ValueError(f"{binary}: {raw.size} float32 values, not a multiple of 4 (x, y, z, reflectance)")
        points = raw.reshape(-1, 4)[:, :3]
        ci = self._camera_index(cam)
        K = calib.K[ci].copy()
        if calib.image_hw is not None and tuple(calib.image_hw) != tuple(image_hw):
            raise ValueError(f"{calib.source}: S_rect is {calib.image_hw} but the images are {tuple(image_hw)}")
        if self.monodepth2_pixel_offset:
            K[0, 2] -= 1.0  # round(u - 1) == round(u) - 1
            K[1, 2] -= 1.0
        depth = points_to_depth_map(torch.from_numpy(points.astype(np.float64)), torch.from_numpy(K),
                                    torch.from_numpy(calib.T_cam_velo[ci]), image_hw)[0].numpy().astype(np.float32)
        if self.cache_depth:
            _atomic_save_npz(npz, velodyne_depth=depth)
        return depth

    def _oxts_poses(self, drive: _Drive) -> Dict[int, np.ndarray]:
        """T_world_cam [4, 4] of the rig camera for every oxts packet of the drive."""
        folder = drive.path / "oxts" / "data"
        packets = {int(p.stem): p for p in folder.glob("*.txt") if p.stem.isdigit()}
        if not packets:
            raise FileNotFoundError(f"KITTI raw: no oxts packets in {folder}")
        calib = self.calibration(drive.date)
        if calib.T_cam_velo is None:
            raise FileNotFoundError(f"KITTI raw: {self.root / drive.date / 'calib_velo_to_cam.txt'} is needed for oxts poses")
        imu = read_calib_file(self.root / drive.date / "calib_imu_to_velo.txt")
        T_velo_imu = np.eye(4)
        T_velo_imu[:3, :3] = imu.get("R", (3, 3))
        T_velo_imu[:3, 3] = imu.get("T", (3,))
        T_cam_imu = calib.T_cam_velo[self._camera_index(self.cameras[0])] @ T_velo_imu
        T_imu_cam = np.linalg.inv(T_cam_imu)
        first = read_oxts_packet(packets[min(packets)])
        scale = np.cos(np.deg2rad(first[0]))
        return {f: oxts_to_pose(read_oxts_packet(p), scale) @ T_imu_cam for f, p in packets.items()}

    def _txt_poses(self, drive: _Drive) -> Dict[int, np.ndarray]:
        for path in (drive.path / self.cameras[0] / "poses.txt", drive.path / "poses.txt"):
            if path.is_file():
                return {i: T for i, T in enumerate(read_poses_txt(path))}
        raise FileNotFoundError(f"KITTI raw: no poses.txt for drive {drive.key} (looked for "
                                f"{drive.path / self.cameras[0] / 'poses.txt'} and {drive.path / 'poses.txt'})")

    def _pose_gt(self, drive: _Drive, frame: int) -> np.ndarray:
        if drive.key not in self._poses:
            source = self.pose_source
            if source == "auto":
                source = "oxts" if (drive.path / "oxts" / "data").is_dir() else "poses_txt"
            self._poses[drive.key] = self._oxts_poses(drive) if source == "oxts" else self._txt_poses(drive)
        poses = self._poses[drive.key]
        out = []
        for offset in self.frame_ids:
            f = frame + offset
            if f not in poses or frame not in poses:
                raise KeyError(f"KITTI raw: drive {drive.key} has no pose for frame {f if f not in poses else frame} "
                               f"(poses cover frames {min(poses)}..{max(poses)})")
            out.append(np.linalg.inv(poses[frame]) @ poses[f])
        return np.stack(out)

    # ----------------------------------------------------------------------------- samples
    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of ``epoch`` (they depend on (seed, epoch, index))."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.items)

    def files(self, index: int) -> List[List[Path]]:
        """The image files [T][N] of item ``index``."""
        key, frame, _ = self.items[index]
        drive = self._drive(key)
        return [[drive.frames[cam][frame + off] for cam in self.cameras] for off in self.frame_ids]

    def __getitem__(self, index: int) -> Dict:
        if index < 0:
            index += len(self)
        key, frame, side = self.items[index]
        drive = self._drive(key)
        files = self.files(index)
        K0, E = self._native_geometry(drive.date)
        T, N = len(self.frame_ids), len(self.cameras)
        rng = np.random.default_rng([self.seed, self.epoch, index])

        flat = [p for row in files for p in row]
        if self.augment:
            decoded = [read_image(p)[0] for p in flat]
        else:
            reads = [read_image(p, target_hw=self.image_hw) for p in flat]
            original_hw = reads[0][1]
            for p, (_, hw) in zip(flat, reads):
                if tuple(hw) != tuple(original_hw):
                    raise ValueError(f"{p} is {hw[1]}x{hw[0]}, but {flat[0]} is {original_hw[1]}x{original_hw[0]}")
            decoded = [rgb for rgb, _ in reads]
        native_hw = tuple(decoded[0].shape[:2]) if self.augment else tuple(original_hw)
        calib = self.calibration(drive.date)
        if calib.image_hw is not None and tuple(calib.image_hw) != native_hw:
            raise ValueError(f"{flat[0]}: the image is {native_hw[1]}x{native_hw[0]} but {calib.source} "
                             f"gives S_rect {calib.image_hw[1]}x{calib.image_hw[0]}")
        out_hw = self.image_hw or native_hw
        K_native = torch.from_numpy(K0).float()

        depth = None
        if "gt_depth" in self.requirements:
            depth = torch.from_numpy(np.stack([self._depth_map(drive, cam, frame, native_hw)
                                               for cam in self.cameras]))[:, None]
        sample: Dict = {}
        if not self.augment:
            # read_image may decode at 1/2, 1/4, 1/8 size: K follows original size -> out_hw.
            images, _ = resize_views(decoded, K_native.repeat(T, 1, 1), out_hw, self.convention)
            images = images.reshape(T, N, 3, *out_hw)
            K = resize_intrinsics(K_native, native_hw, out_hw, self.convention)
            flipped = False
        else:
            images = torch.from_numpy(np.stack(decoded)).permute(0, 3, 1, 2).reshape(T, N, 3, *native_hw)
            images, K, depth, flipped, jitter = self._augment(images, K_native, depth, out_hw, rng)
        sample["image"] = images.float()
        sample["K"] = K.float()
        sample["extrinsics"] = torch.from_numpy(E).float()
        sample["mask"] = torch.ones(N, 1, *out_hw)
        sample["frame_ids"] = torch.tensor(self.frame_ids, dtype=torch.int64)
        if depth is not None:
            sample["depth_gt"] = depth.float()
        if "gt_pose" in self.requirements:
            sample["pose_gt"] = torch.from_numpy(self._pose_gt(drive, frame)).float()
        if self.augment:
            sample["image_aug"] = apply_color_jitter(sample["image"], jitter, per_camera=False) \
                if jitter is not None else sample["image"].clone()
            if flipped:
                sample = flip_sample(sample, self.convention)
        sample["meta"] = {
            "dataset": "kitti_raw", "scene": key, "index": index, "frame": frame, "side": side,
            "camera_names": list(self.cameras), "files": [str(p) for p in files[self.frame_ids.index(0)]],
            "flipped": int(flipped),
        }
        return sample

    def _augment(self, images: torch.Tensor, K: torch.Tensor, depth: Optional[torch.Tensor],
                 out_hw: Tuple[int, int], rng: np.random.Generator):
        """Crop(s) + resize of uint8 images [T, N, 3, H, W]; the draws, in a fixed order: fixed
        crop offset, scale, scale-crop offset, flip, jitter, jitter parameters."""
        top, left, (ch, cw) = draw_crop_box(tuple(images.shape[-2:]), self.crop_hw, self.crop_scale, rng)
        flipped = bool(rng.random() < self.flip_prob)
        jitter = draw_color_jitter(rng, self.color_jitter_prob, self.color_jitter_strengths)
        images, K = crop_views(images, K, top, left, (ch, cw))
        images, K = resize_views(images, K, out_hw, self.convention)
        if depth is not None:
            depth = resize_sparse_depth(depth[..., top:top + ch, left:left + cw], out_hw)
        return images, K, depth, flipped, jitter
