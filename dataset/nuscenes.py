"""nuScenes through the official nuscenes-devkit (``NuScenes(version, dataroot)``; spec/formats.md §5).

Items are key-frame samples with their six cameras:
- ``split_file`` (sample tokens, one per line, like VFDepth's ``dataset/nuscenes/train.txt`` or
  the synthetic writer's ``splits/train.txt``) selects them when given;
- otherwise, for the official versions (``v1.0-trainval``, ``v1.0-test``), the samples of the
  scenes of the devkit's ``create_splits_scenes()[split]``;
- otherwise (``v1.0-mini`` or any custom version, e.g. this project's synthetic data, whose scene
  names are not the official ones) every sample of the version.

Context frames (offsets f != 0) are the neighbouring camera *sweeps* (12 Hz), found per camera by
following ``sample_data.prev`` / ``next`` |f| steps, as VFDepth does; an item whose chain is too
short for some camera is left out. Evaluate on key frames with ``frame_ids=(0,)``.

Geometry (``T_a_b`` maps points from b into a; ``transform_matrix(translation, rotation)`` with
w-first quaternions, as the devkit):
- ``K`` from ``calibrated_sensor.camera_intrinsic``, resized to ``image_hw``; ``extrinsics`` =
  T_ego_cam of the same ``calibrated_sensor`` (the rig frame is the ego body frame).
- Each sample_data has its own ego pose (the sensors are not synchronised: the six cameras of one
  sample are up to ~40 ms apart). The rig pose of frame t is the ego pose (T_global_ego) of
  *camera 0's* sample_data at that frame; ``pose_gt[t]`` = inv(T_global_ego[target]) @
  T_global_ego[t]. The other cameras' few-centimetre offsets are ignored, as in VFDepth.
- ``depth_gt``: LIDAR_TOP of the same sample: lidar -> ego at the lidar's time -> global -> ego at
  each camera's time -> camera, so the ego motion between the lidar sweep and the camera exposure
  is compensated (as ``NuScenesExplorer.map_pointcloud_to_image`` does); points closer than
  ``lidar_min_depth`` (1 m, the devkit's ``min_dist``) are dropped; each point goes to the pixel
  whose centre is nearest and the nearest return wins (VFDepth keeps the last write). Native
  resolution, cached as ``<dataroot>/depth/lidar/<CAM>/<image stem>.npz`` (key ``depth``, float32,
  atomic writes; or under ``depth_cache`` when that is a folder).
- Masks: ``mask_path`` in any layout of dataset/masks.py (VFDepth's ``nuscenes_mask/CAM_*_mask.png``
  flat; the synthetic writer's ``masks/<scene name>/CAM_*_mask.png``); all ones without it.

The devkit tables are only used while indexing: each item keeps its file names, poses and
calibration, so the dataset pickles small into DataLoader workers. Pass ``nusc`` to reuse an
already loaded ``NuScenes``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from geometry import points_to_depth_map, quaternion_translation_to_transform

from .rig_dataset import RigDataset

NUSCENES_CAMERAS = ("CAM_FRONT", "CAM_FRONT_LEFT", "CAM_FRONT_RIGHT", "CAM_BACK_LEFT", "CAM_BACK_RIGHT", "CAM_BACK")
LIDAR_CHANNEL = "LIDAR_TOP"
OFFICIAL_VERSIONS = ("v1.0-trainval", "v1.0-test")


def transform_from_record(record: Dict) -> np.ndarray:
    """4x4 float64 from a nuScenes record's ``translation`` [3] and w-first ``rotation`` [4]."""
    q = torch.tensor(record["rotation"], dtype=torch.float64)
    t = torch.tensor(record["translation"], dtype=torch.float64)
    return quaternion_translation_to_transform(q / q.norm(), t).numpy()


def load_lidar_bin(path: Path) -> np.ndarray:
    """A nuScenes ``.pcd.bin`` (float32 x, y, z, intensity, ring) -> float64 [P, 3] in the sensor frame."""
    if not path.is_file():
        raise FileNotFoundError(f"lidar point cloud not found: {path}")
    raw = np.fromfile(str(path), dtype=np.float32)
    if raw.size % 5:
        raise ValueError(f"lidar file {path}: {raw.size} float32 values is not a multiple of 5 (x y z intensity ring)")
    return raw.reshape(-1, 5)[:, :3].astype(np.float64)


def read_split_file(path: Union[str, os.PathLike]) -> List[str]:
    """Sample tokens, one per line (blank lines and '#' comments skipped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split file not found: {path}")
    lines = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
    return [line for line in lines if line]


class NuScenesDataset(RigDataset):
    """nuScenes (devkit tables) as contract samples (dataset/contract.py).

    Args:
        data_path: the nuScenes dataroot (holding ``samples/``, ``sweeps/``, ``<version>/``).
        version: table folder, e.g. "v1.0-trainval", "v1.0-mini".
        split: "train", "val" or "test" (used with the devkit's scene splits; see the module docstring).
        split_file: optional file of sample tokens; takes precedence over ``split``.
        cameras: channels, camera 0 first (its ego poses define the rig poses).
        frame_ids: frame offsets (target 0 included); context = camera sweeps.
        image_hw: output size; K follows (``convention``).
        requirements: any of "gt_pose", "gt_depth", "mask" (or the reference's string form).
        mask_path: self-occlusion masks (used with "mask"), or None for all-valid masks.
        depth_cache: True (next to the data), False, or a folder for the cache.
        color_jitter / seed: as :class:`dataset.ddad.DDADDataset` (``image_aug``, one draw per camera).
        lidar_min_depth: lidar points nearer than this (metres, camera z) are dropped.
        nusc: an already loaded ``nuscenes.nuscenes.NuScenes`` for this dataroot and version.
        reduced_decode, frame_cache_dir, color_aug_on_device: the fast data path, as
            :class:`dataset.ddad.DDADDataset`.
    """

    dataset_name = "nuscenes"

    def __init__(
        self,
        data_path: Union[str, os.PathLike],
        version: str = "v1.0-trainval",
        split: str = "train",
        split_file: Optional[Union[str, os.PathLike]] = None,
        cameras: Sequence[str] = NUSCENES_CAMERAS,
        frame_ids: Sequence[int] = (0, -1, 1),
        image_hw: Sequence[int] = (352, 640),
        requirements: Union[str, Sequence[str]] = ("gt_pose", "mask"),
        mask_path: Optional[Union[str, os.PathLike]] = None,
        depth_cache: Union[bool, str, os.PathLike] = True,
        convention: str = "half_pixel",
        color_jitter: Optional[Sequence[float]] = None,
        seed: Optional[int] = 0,
        lidar_min_depth: float = 1.0,
        nusc=None,
        reduced_decode: bool = True,
        frame_cache_dir: Optional[Union[str, os.PathLike]] = None,
        color_aug_on_device: bool = False,
    ):
        super().__init__(cameras, frame_ids, image_hw, requirements, mask_path, depth_cache, convention,
                         color_jitter, seed, default_cache_root=Path(data_path), reduced_decode=reduced_decode,
                         frame_cache_dir=frame_cache_dir, color_aug_on_device=color_aug_on_device)
        self.root = Path(data_path)
        self.version = version
        self.split = split
        self.lidar_min_depth = float(lidar_min_depth)

        if nusc is None:
            if not (self.root / version).is_dir():
                raise FileNotFoundError(
                    f"nuScenes table folder not found: {self.root / version} (data_path={self.root}, version={version!r})"
                )
            from nuscenes.nuscenes import NuScenes

            nusc = NuScenes(version=version, dataroot=str(self.root), verbose=False)
        self.items: List[Dict] = []
        self.skipped_short_context = 0
        for token in self._sample_tokens(nusc, split_file):
            item = self._index_sample(nusc, token)
            if item is None:
                self.skipped_short_context += 1
            else:
                self.items.append(item)

    # ------------------------------------------------------------------ indexing
    def _sample_tokens(self, nusc, split_file) -> List[str]:
        if split_file is not None:
            tokens = read_split_file(split_file)
            known = {s["token"] for s in nusc.sample}
            missing = [t for t in tokens if t not in known]
            if missing:
                raise ValueError(f"split file {split_file}: {len(missing)} sample token(s) are not in "
                                 f"{self.root / self.version}, e.g. {missing[:3]}")
            return tokens
        if self.version in OFFICIAL_VERSIONS:
            from nuscenes.utils.splits import create_splits_scenes

            splits = create_splits_scenes()
            if self.split not in splits:
                raise ValueError(f"split {self.split!r} is not a nuScenes split; available: {sorted(splits)}")
            names = set(splits[self.split])
            scenes = [s for s in nusc.scene if s["name"] in names]
        else:
            scenes = list(nusc.scene)
        tokens = []
        for scene in scenes:
            token = scene["first_sample_token"]
            while token:
                tokens.append(token)
                token = nusc.get("sample", token)["next"]
        return tokens

    def _index_sample(self, nusc, token: str) -> Optional[Dict]:
        sample = nusc.get("sample", token)
        scene = nusc.get("scene", sample["scene_token"])
        missing = [c for c in self.cameras if c not in sample["data"]]
        if missing:
            raise ValueError(
                f"sample {token} of {scene['name']} has no camera(s) {missing}; it has {sorted(sample['data'])}"
            )
        T, N = len(self.frame_ids), len(self.cameras)
        files: List[List[str]] = [[""] * N for _ in range(T)]
        T_global_ego = np.zeros((T, N, 4, 4))
        stamps = np.zeros((T, N), dtype=np.int64)
        K = np.zeros((N, 3, 3))
        T_ego_cam = np.zeros((N, 4, 4))
        native_hw = []
        for n, cam in enumerate(self.cameras):
            sd0 = nusc.get("sample_data", sample["data"][cam])
            cs = nusc.get("calibrated_sensor", sd0["calibrated_sensor_token"])
            K[n] = np.asarray(cs["camera_intrinsic"], dtype=np.float64)
            T_ego_cam[n] = transform_from_record(cs)
            native_hw.append((int(sd0["height"]), int(sd0["width"])))
            for t, offset in enumerate(self.frame_ids):
                sd = sd0
                for _ in range(abs(offset)):
                    nxt = sd["next"] if offset > 0 else sd["prev"]
                    if not nxt:
                        return None  # the chain is too short for this offset
                    sd = nusc.get("sample_data", nxt)
                files[t][n] = sd["filename"]
                T_global_ego[t, n] = transform_from_record(nusc.get("ego_pose", sd["ego_pose_token"]))
                stamps[t, n] = int(sd["timestamp"])
        item = {
            "token": token, "scene": scene["name"], "files": files, "T_global_ego": T_global_ego,
            "timestamps": stamps, "K": K, "T_ego_cam": T_ego_cam, "native_hw": native_hw,
        }
        if "gt_depth" in self.requirements:
            if LIDAR_CHANNEL not in sample["data"]:
                raise ValueError(f"sample {token} of {scene['name']} has no {LIDAR_CHANNEL}, needed for gt_depth")
            sd = nusc.get("sample_data", sample["data"][LIDAR_CHANNEL])
            item["lidar_file"] = sd["filename"]
            item["T_ego_lidar"] = transform_from_record(nusc.get("calibrated_sensor", sd["calibrated_sensor_token"]))
            item["T_global_ego_lidar"] = transform_from_record(nusc.get("ego_pose", sd["ego_pose_token"]))
        return item

    # ------------------------------------------------------------------ helpers
    def depth_cache_file(self, camera: str, image_file: str) -> Path:
        name = Path(image_file).name
        stem = name[: -len(".jpg")] if name.lower().endswith(".jpg") else Path(name).stem
        return self.cache_root / "depth" / "lidar" / camera / f"{stem}.npz"

    def lidar_depth(self, item: Dict, original_hw: Sequence[Tuple[int, int]]) -> torch.Tensor:
        """Depth [N, 1, H, W] of the sample's LIDAR_TOP sweep in each camera at native resolution."""
        target = self.frame_ids.index(0)
        if len(set(original_hw)) != 1:
            raise ValueError(f"gt_depth needs the cameras to share one image size, got {list(original_hw)}")
        hw = original_hw[0]
        files = [self.depth_cache_file(cam, item["files"][target][n]) for n, cam in enumerate(self.cameras)]
        depth = [self.depth_cache.load(f, hw) for f in files]
        todo = [n for n, d in enumerate(depth) if d is None]
        if todo:
            points = torch.from_numpy(load_lidar_bin(self.root / item["lidar_file"]))
            # camera <- ego(t_cam) <- global <- ego(t_lidar) <- lidar
            T_global_lidar = item["T_global_ego_lidar"] @ item["T_ego_lidar"]
            T_cam_lidar = np.stack([
                np.linalg.inv(item["T_global_ego"][target, n] @ item["T_ego_cam"][n]) @ T_global_lidar for n in todo
            ])
            computed = points_to_depth_map(points, torch.from_numpy(item["K"][todo]), torch.from_numpy(T_cam_lidar),
                                           hw, min_depth=self.lidar_min_depth)
            for j, n in enumerate(todo):
                depth[n] = computed[j, 0].to(torch.float32).numpy()
                self.depth_cache.save(files[n], depth[n])
        return torch.from_numpy(np.stack(depth))[:, None]

    # ------------------------------------------------------------------ items
    def __getitem__(self, index: int) -> Dict:
        item = self.items[index]
        images, original_hw = self.read_views([[self.root / f for f in row] for row in item["files"]])
        K = self.resized_intrinsics(item["K"], original_hw)
        target = self.frame_ids.index(0)
        out = {
            "image": images,
            "K": K,
            "extrinsics": torch.from_numpy(item["T_ego_cam"]).float(),
            "mask": self.masks.get(self.cameras, item["scene"]),
            "frame_ids": torch.tensor(self.frame_ids, dtype=torch.int64),
        }
        if "gt_pose" in self.requirements:
            T_global_rig = item["T_global_ego"][:, 0]  # camera 0's ego pose per frame
            out["pose_gt"] = torch.from_numpy(np.linalg.inv(T_global_rig[target]) @ T_global_rig).float()
        if "gt_depth" in self.requirements:
            out["depth_gt"] = self.lidar_depth(item, original_hw)
        self.add_color_jitter(out, index)
        out["meta"] = {
            "dataset": self.dataset_name,
            "scene": item["scene"],
            "token": item["token"],
            "index": index,
            "cameras": list(self.cameras),
            "timestamps": torch.from_numpy(item["timestamps"]),
            "files": list(item["files"][target]),
        }
        return out
