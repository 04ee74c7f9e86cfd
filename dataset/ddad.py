"""DDAD (TRI's DGP scene-dataset format), read straight from its JSON files: no dgp package, no
protobuf toolchain (see spec/formats.md §3).

Files read::

    <root>/<dataset>.json                        scene_splits: "0" train, "1" val, "2" test, "3" train_overfit
    <root>/<scene>/scene_<sha1>.json             samples (list order = time order) and datums (by key)
    <root>/<scene>/calibration/<key>.json        names / intrinsics / extrinsics (parallel lists)
    <root>/<scene>/rgb/CAMERA_xx/<ts>.png|jpg    the image of each camera datum (path from the datum)
    <root>/<scene>/point_cloud/LIDAR/<ts>.npz    key "data": float64 [P, 4] X, Y, Z, INTENSITY

Poses (DGP semantics; ``T_a_b`` maps points from b into a):
- calibration extrinsics = T_rig_cam (sensor -> vehicle); they become ``extrinsics``.
- ``datum.image.pose`` = T_world_cam, ``datum.point_cloud.pose`` = T_world_lidar (world = the
  scene's local frame).
- The rig pose of a sample is T_world_rig = T_world_cam0 @ inv(T_rig_cam0) with camera 0 = the first
  requested camera (DDAD's cameras are synchronised). ``pose_gt[t]`` = inv(T_world_rig[target]) @
  T_world_rig[t] = T_rig(target)_rig(t), identity for the target frame (dataset/contract.py).

Items: the samples i of each scene whose context frames i + f all exist, i.e. i in [back, N - forward)
as in dgp's SynchronizedSceneDataset.

Ground-truth depth (``"gt_depth"`` in requirements): the lidar cloud of the target sample, moved
lidar -> world (T_world_lidar) -> camera (inv T_world_cam), projected with
``geometry.points_to_depth_map`` at the image's original resolution: each point goes to the pixel
whose centre is nearest and the nearest return wins. (dgp's ``generate_depth_map`` truncates the
coordinates and keeps the last write; packnet-sfm and VFDepth use that.) It is returned at the
native resolution [N, 1, Hg, Wg] (metrics resize predictions to it) and cached, as packnet-sfm
does, under ``<scene>/depth/lidar/CAMERA_xx/<image stem>.npz`` (key ``depth``, float32, plus a
``method`` tag so that a packnet-sfm cache in the same place is recognised and left alone).
"""
from __future__ import annotations

import json
import os
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from geometry import points_to_depth_map, quaternion_translation_to_transform

from .rig_dataset import RigDataset

DDAD_CAMERAS = ("CAMERA_01", "CAMERA_05", "CAMERA_06", "CAMERA_07", "CAMERA_08", "CAMERA_09")
SPLITS = {"train": "0", "val": "1", "test": "2", "train_overfit": "3"}
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


# ----------------------------------------------------------------------------- shared helpers
def _load_json(path: Path, what: str) -> Dict:
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        with open(path, "r") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what} {path} is not valid JSON: {exc}") from exc


def _pose_matrix(pose: Dict) -> np.ndarray:
    """DGP pose {translation: {x,y,z}, rotation: {qw,qx,qy,qz}} -> 4x4 float64 (missing = 0, as
    protobuf defaults; an all-zero rotation is taken as the identity)."""
    r = pose.get("rotation", {}) or {}
    t = pose.get("translation", {}) or {}
    q = [float(r.get(k, 0.0)) for k in ("qw", "qx", "qy", "qz")]
    if not any(q):
        q = [1.0, 0.0, 0.0, 0.0]
    q = torch.tensor(q, dtype=torch.float64)
    q = q / q.norm()
    tr = torch.tensor([float(t.get(k, 0.0)) for k in ("x", "y", "z")], dtype=torch.float64)
    return quaternion_translation_to_transform(q, tr).numpy()


def _timestamp_us(datum_id: Dict) -> int:
    stamp = datum_id.get("timestamp", "")
    if not stamp:
        return 0
    dt = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    delta = dt - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def load_point_cloud(path: Path) -> np.ndarray:
    """DGP lidar npz -> float64 [P, 3] X, Y, Z (key ``data``: [P, >=3] or structured X/Y/Z)."""
    if not path.is_file():
        raise FileNotFoundError(f"point cloud not found: {path}")
    with np.load(path, allow_pickle=False) as npz:
        if "data" not in npz.files:
            raise ValueError(f"point cloud {path} has no key 'data' (keys: {npz.files})")
        data = npz["data"]
    if data.dtype.names:
        missing = [k for k in ("X", "Y", "Z") if k not in data.dtype.names]
        if missing:
            raise ValueError(f"point cloud {path}: structured array lacks fields {missing} (has {data.dtype.names})")
        return np.stack([np.asarray(data[k], dtype=np.float64) for k in ("X", "Y", "Z")], -1).reshape(-1, 3)
    if data.ndim != 2 or data.shape[1] < 3:
        raise ValueError(f"point cloud {path}: expected [P, >=3] values, got shape {data.shape}")
    return np.asarray(data[:, :3], dtype=np.float64)


# ----------------------------------------------------------------------------- DGP index
class _Calibration:
    def __init__(self, path: Path):
        raw = _load_json(path, "calibration file")
        names = raw.get("names", [])
        intrinsics = raw.get("intrinsics", [])
        extrinsics = raw.get("extrinsics", [])
        if not (len(names) == len(intrinsics) == len(extrinsics)):
            raise ValueError(f"calibration file {path}: names, intrinsics and extrinsics differ in length")
        self.path = path
        self.K: Dict[str, np.ndarray] = {}
        self.skew: Dict[str, float] = {}
        self.T_rig_sensor: Dict[str, np.ndarray] = {}
        for name, intr, extr in zip(names, intrinsics, extrinsics):
            key = name.upper()
            fx, fy = float(intr.get("fx", 0.0)), float(intr.get("fy", 0.0))
            cx, cy = float(intr.get("cx", 0.0)), float(intr.get("cy", 0.0))
            self.K[key] = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
            self.skew[key] = float(intr.get("skew", 0.0))
            self.T_rig_sensor[key] = _pose_matrix(extr)


class _Scene:
    """The parts of one DGP scene the loader needs, per sample: each camera's image file, pose and
    timestamp, the lidar file and pose, the calibration key."""

    def __init__(self, root: Path, scene_file: str, cameras: Sequence[str], lidar_name: str, need_lidar: bool):
        self.json_path = root / scene_file
        self.dir = self.json_path.parent
        raw = _load_json(self.json_path, "scene file")
        self.name = str(raw.get("name") or self.dir.name)
        self.folder = self.dir.name
        datums = {d["key"]: d for d in raw.get("data", [])}
        self.samples: List[Dict] = []
        available = set()
        for s_index, sample in enumerate(raw.get("samples", [])):
            cams, lidar = {}, None
            for key in sample.get("datum_keys", []):
                if key not in datums:
                    raise ValueError(
                        f"scene file {self.json_path}: sample {s_index} lists datum key {key} that is not in 'data'"
                    )
                d = datums[key]
                name = d["id"]["name"].upper()
                body = d.get("datum", {})
                if "image" in body:
                    image = body["image"]
                    cams[name] = (image["filename"], _pose_matrix(image.get("pose", {})), _timestamp_us(d["id"]))
                    available.add(name)
                elif "point_cloud" in body and name == lidar_name:
                    pc = body["point_cloud"]
                    lidar = (pc["filename"], _pose_matrix(pc.get("pose", {})), _timestamp_us(d["id"]))
            self.samples.append({
                "cams": cams,
                "lidar": lidar,
                "calibration_key": sample.get("calibration_key", ""),
                "timestamp": _timestamp_us(sample.get("id", {})),
            })
        for cam in cameras:
            if cam not in available:
                raise ValueError(
                    f"camera {cam!r} is not in scene {self.name!r} ({self.json_path}); "
                    f"this scene has cameras {sorted(available)}"
                )
        for s_index, sample in enumerate(self.samples):
            missing = [c for c in cameras if c not in sample["cams"]]
            if missing:
                raise ValueError(
                    f"sample {s_index} of scene {self.name!r} ({self.json_path}) has no datum for camera(s) "
                    f"{missing}; it has {sorted(sample['cams'])}"
                )
            if need_lidar and sample["lidar"] is None:
                raise ValueError(
                    f"sample {s_index} of scene {self.name!r} ({self.json_path}) has no {lidar_name} point cloud, "
                    "needed for gt_depth"
                )


# ----------------------------------------------------------------------------- the dataset
class DDADDataset(RigDataset):
    """DDAD (or any DGP scene dataset) as contract samples (dataset/contract.py).

    Args:
        data_path: the dataset json (DDAD's ``ddad.json``, dgp's ``scene_dataset_v1.0.json``).
        split: "train", "val", "test" or "train_overfit" (scene_splits "0".."3").
        cameras: camera datum names, case-insensitive (``camera_01`` = ``CAMERA_01``); camera 0
            defines the rig pose. Every scene of the split must have all of them.
        frame_ids: frame offsets, target 0 included; order of the T dimension.
        image_hw: output image size (H, W); K follows (``convention``).
        requirements: any of "gt_pose", "gt_depth", "mask" (or the reference's string form).
            "mask" with ``mask_path`` reads the self-occlusion masks (layouts: dataset/masks.py);
            otherwise the masks are all ones.
        mask_path: folder of self-occlusion masks, or None.
        depth_cache: True = cache lidar depth maps next to the data, False = never, or a folder
            to hold the cache instead (same layout ``<folder>/<scene>/depth/lidar/...``; for
            read-only data).
        convention: intrinsics convention for the resize ("half_pixel" exact, "reference" as VFDepth).
        color_jitter: None, or (brightness, contrast, saturation, hue) strengths: adds
            ``image_aug`` with one draw per camera shared by its frames (VFDepth).
        seed: seed of the jitter draws (per item and epoch, see :meth:`set_epoch`); None = the
            global torch RNG.
        lidar_name: the point-cloud datum used for depth.
        reduced_decode, frame_cache_dir, color_aug_on_device: the fast data path (see
            :class:`dataset.rig_dataset.RigDataset`): reduced-size decoding (default on), the
            resized-frame cache folder (``data.cache_dir``; None = none), and jitter draws under
            ``color_jitter`` instead of ``image_aug`` (``data.color_aug_on_device``; default off here).
    """

    dataset_name = "ddad"

    def __init__(
        self,
        data_path: Union[str, os.PathLike],
        split: str = "train",
        cameras: Sequence[str] = DDAD_CAMERAS,
        frame_ids: Sequence[int] = (0, -1, 1),
        image_hw: Sequence[int] = (384, 640),
        requirements: Union[str, Sequence[str]] = ("gt_pose", "mask"),
        mask_path: Optional[Union[str, os.PathLike]] = None,
        depth_cache: Union[bool, str, os.PathLike] = True,
        convention: str = "half_pixel",
        color_jitter: Optional[Sequence[float]] = None,
        seed: Optional[int] = 0,
        lidar_name: str = "LIDAR",
        reduced_decode: bool = True,
        frame_cache_dir: Optional[Union[str, os.PathLike]] = None,
        color_aug_on_device: bool = False,
    ):
        super().__init__(cameras, frame_ids, image_hw, requirements, mask_path, depth_cache, convention,
                         color_jitter, seed, default_cache_root=None, reduced_decode=reduced_decode,
                         frame_cache_dir=frame_cache_dir, color_aug_on_device=color_aug_on_device)
        self.data_path = Path(data_path)
        if self.data_path.is_dir():
            raise ValueError(f"data_path must be the dataset json (e.g. ddad.json), got the folder {self.data_path}")
        self.root = self.data_path.parent
        self.split = split
        self.lidar_name = lidar_name.upper()

        dataset = _load_json(self.data_path, "dataset json")
        splits = dataset.get("scene_splits", {})
        available = {name: key for name, key in SPLITS.items() if key in splits}
        if split not in SPLITS or SPLITS[split] not in splits:
            raise ValueError(
                f"split {split!r} is not in {self.data_path}; available splits: {sorted(available)} "
                f"(scene_splits keys {sorted(splits)})"
            )
        scene_files = splits[SPLITS[split]].get("filenames", [])
        need_lidar = "gt_depth" in self.requirements
        self.scenes = [_Scene(self.root, f, self.cameras, self.lidar_name, need_lidar) for f in scene_files]
        self._calibrations: Dict[Tuple[int, str], _Calibration] = {}
        back, forward = -min(min(self.frame_ids), 0), max(max(self.frame_ids), 0)
        self.items: List[Tuple[int, int]] = [
            (s, i) for s, scene in enumerate(self.scenes) for i in range(back, len(scene.samples) - forward)
        ]

    # ------------------------------------------------------------------ helpers
    def calibration(self, scene_index: int, key: str) -> _Calibration:
        cache_key = (scene_index, key)
        if cache_key not in self._calibrations:
            scene = self.scenes[scene_index]
            calib = _Calibration(scene.dir / "calibration" / f"{key}.json")
            for cam in self.cameras:
                if cam not in calib.K:
                    raise ValueError(
                        f"camera {cam!r} is not in the calibration file {calib.path} (it has {sorted(calib.K)})"
                    )
                if calib.K[cam][0, 0] <= 0 or calib.K[cam][1, 1] <= 0:
                    raise ValueError(f"camera {cam!r} has no intrinsics (fx, fy = 0) in {calib.path}")
                if calib.skew[cam] != 0.0:
                    warnings.warn(f"camera {cam!r} in {calib.path} has skew {calib.skew[cam]}; ignored, as dgp does",
                                  stacklevel=2)
            self._calibrations[cache_key] = calib
        return self._calibrations[cache_key]

    def depth_cache_file(self, scene_index: int, camera: str, image_file: str) -> Path:
        scene = self.scenes[scene_index]
        base = scene.dir if self.cache_root is None else self.cache_root / scene.folder
        return base / "depth" / "lidar" / camera / (Path(image_file).stem + ".npz")

    def lidar_depth(self, scene_index: int, sample_index: int, K_full: np.ndarray,
                    original_hw: Sequence[int]) -> torch.Tensor:
        """Depth maps [N, 1, H, W] of the sample's lidar cloud in each camera at full resolution
        (cached; see the module docstring)."""
        scene = self.scenes[scene_index]
        sample = scene.samples[sample_index]
        files = [self.depth_cache_file(scene_index, cam, sample["cams"][cam][0]) for cam in self.cameras]
        depth = [self.depth_cache.load(f, original_hw) for f in files]
        todo = [n for n, d in enumerate(depth) if d is None]
        if todo:
            lidar_file, T_world_lidar, _ = sample["lidar"]
            points = torch.from_numpy(load_point_cloud(scene.dir / lidar_file))
            T_cam_lidar = np.stack([
                np.linalg.inv(sample["cams"][self.cameras[n]][1]) @ T_world_lidar for n in todo
            ])
            computed = points_to_depth_map(points, torch.from_numpy(K_full[todo]), torch.from_numpy(T_cam_lidar),
                                           original_hw)
            for j, n in enumerate(todo):
                depth[n] = computed[j, 0].to(torch.float32).numpy()
                self.depth_cache.save(files[n], depth[n])
        return torch.from_numpy(np.stack(depth))[:, None]

    # ------------------------------------------------------------------ items
    def __getitem__(self, index: int) -> Dict:
        scene_index, i = self.items[index]
        scene = self.scenes[scene_index]
        target = scene.samples[i]
        calib = self.calibration(scene_index, target["calibration_key"])
        views = [[scene.samples[i + offset]["cams"][cam] for cam in self.cameras] for offset in self.frame_ids]
        images, original_hw = self.read_views([[scene.dir / filename for filename, _, _ in row] for row in views])
        cam_poses = np.stack([row[0][1] for row in views])            # camera 0's T_world_cam per frame
        timestamps = torch.tensor([[stamp for _, _, stamp in row] for row in views], dtype=torch.int64)
        files = [str(Path(scene.folder) / filename) for filename, _, _ in views[self.frame_ids.index(0)]]

        K_full = np.stack([calib.K[cam] for cam in self.cameras])
        K = self.resized_intrinsics(K_full, original_hw)
        T_rig_cam = np.stack([calib.T_rig_sensor[cam] for cam in self.cameras])
        out = {
            "image": images,
            "K": K,
            "extrinsics": torch.from_numpy(T_rig_cam).float(),
            "mask": self.masks.get(self.cameras, scene.folder),
            "frame_ids": torch.tensor(self.frame_ids, dtype=torch.int64),
        }
        if "gt_pose" in self.requirements:
            T_world_rig = cam_poses @ np.linalg.inv(T_rig_cam[0])
            target_t = self.frame_ids.index(0)
            out["pose_gt"] = torch.from_numpy(np.linalg.inv(T_world_rig[target_t]) @ T_world_rig).float()
        if "gt_depth" in self.requirements:
            if len(set(original_hw)) != 1:
                raise ValueError(f"gt_depth needs the cameras to share one image size, got {original_hw}")
            out["depth_gt"] = self.lidar_depth(scene_index, i, K_full, original_hw[0])
        self.add_color_jitter(out, index)
        out["meta"] = {
            "dataset": self.dataset_name,
            "scene": scene.name,
            "scene_folder": scene.folder,
            "index": index,
            "sample_index": i,
            "cameras": list(self.cameras),
            "timestamps": timestamps,
            "files": files,
        }
        return out
