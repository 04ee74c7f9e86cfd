"""KITTI 2015 scene flow as a two-camera rig with its ground truth: :class:`Kitti2015Dataset`.

Layout under ``data_path`` (spec formats.md §2, multi-mono-sf §5)::

    data_scene_flow/{training,testing}/image_2|image_3/%06d_10.png  %06d_11.png
    data_scene_flow_multiview/{training,testing}/image_2|image_3/%06d_%02d.png   (frames 00..20)
    data_scene_flow/training/disp_occ_0|disp_occ_1|flow_occ|obj_map/%06d_10.png   (+ *_noc variants)
    data_scene_flow_calib/{training,testing}/calib_cam_to_cam/%06d.txt           (optional)

Image folders may also be called ``image_2_jpg`` / ``image_3_jpg`` (multi-mono-sf's JPEG copies)
and files may be ``.png`` or ``.jpg``. Frame offsets in ``frame_ids`` are relative to frame 10:
[0, 1] is 10 -> 11, [-3, -2, -1, 0, 1] is 07..11. Frames 10 and 11 are read from
``data_scene_flow`` when there, the others from ``data_scene_flow_multiview``.

The rig is [image_2, image_3] (left first, rig = left rectified camera, right at +baseline along x).
Calibration: ``calib_cam_to_cam/%06d.txt`` when present (P_rect_02/03, as KITTI raw); otherwise
multi-mono-sf's fallback, the date that the image width identifies, with that date's K
(:func:`dataset.kitti_calib.fallback_calibration`: K exact, baseline exact for 2011_09_26 and
rounded to 0.1 mm for the other dates).

Ground truth (training scenes, ``load_gt``), at the original resolution with the original left K
(``kitti2015_K``), under the contract's keys: ``kitti2015_disp0`` (disp_occ_0), ``kitti2015_disp1``
(disp_occ_1), ``kitti2015_flow`` + ``kitti2015_flow_valid`` (flow_occ), ``kitti2015_obj_map``;
``gt_variant="noc"`` reads the disp_noc_0 / disp_noc_1 / flow_noc files instead (obj_map has no
variant). Disparities are float32 pixels with 0 = invalid, the flow float32 pixels, the valid mask
float32 {0, 1}, obj_map int64 (0 background). ``requirements`` may also ask for ``gt_depth``: the
left camera's depth fx * baseline / disparity from the disparity map (0 where invalid), the right
camera's all zeros (KITTI 2015 has no right ground truth); ``gt_pose`` is not available.

Splits: ``"train"`` = the training scenes not in ``validate_indices`` (160 of 200), ``"val"`` =
those in it (40), ``"full"`` = all training scenes (200), ``"test"`` = the testing scenes (no
ground truth). Scenes are the ``%06d_10`` images found in the image folder of the subset.

Augmentation (``augment=True``, fine-tuning, multi-mono-sf's ``Augmentation_SceneFlow_Finetuning``
style): an optional fixed-size random crop ``crop_hw`` (the reference crops to 370 x 1224), then a
random scale crop ``crop_scale`` (reference U[0.94, 1]; the default (1, 1) keeps the size fixed,
because the ground truth is cropped too and must keep one size to collate batches larger than
one), both applied to images and ground truth, shifting K and ``kitti2015_K``; images then resized
to ``image_hw``; colour jitter into ``image_aug`` with probability ``color_jitter_prob`` (one
draw for the whole sample). No flip (the ground truth is the left camera's only). Draws come from
``numpy.random.default_rng((seed, epoch, index))``.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from geometry import resize_intrinsics
from utils.kitti_io import read_disparity_png, read_flow_png, read_object_map_png

from .image_io import image_size, read_image
from .kitti_calib import StereoCalibration, fallback_calibration, read_stereo_calibration
from .transforms import apply_color_jitter, crop_views, draw_color_jitter, draw_crop_box, resize_views

PathLike = Union[str, os.PathLike]

__all__ = ["Kitti2015Dataset", "VALIDATE_INDICES", "kitti_2015_split_indices", "KITTI2015_SPLITS"]

# multi-mono-sf's 40 validation scenes of the 200 KITTI 2015 training scenes (VALIDATE_INDICES in
# its datasets/kitti_2015_train*.py). CAUTION: this list was written down from memory and has not
# been verified against the reference code; pass ``validate_indices`` to use another list.
VALIDATE_INDICES = (2, 34, 35, 36, 37, 38, 39, 40, 41, 42, 77, 78, 79, 80, 81, 83, 99, 100, 101, 102, 105, 106,
                    112, 113, 114, 115, 116, 117, 118, 119, 120, 121, 122, 123, 124, 125, 126, 127, 128, 129)
KITTI2015_SPLITS = ("train", "val", "full", "test")
CAMERA_FOLDERS = (("image_2", "image_2_jpg"), ("image_3", "image_3_jpg"))
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
REQUIREMENTS = ("gt_depth", "mask")
_SCENE_10 = re.compile(r"^(\d{6})_10$")


def kitti_2015_split_indices(split: str, scenes: Sequence[int],
                             validate_indices: Sequence[int] = VALIDATE_INDICES) -> List[int]:
    """The scene indices of ``split`` ("train", "val", "full" or "test") among ``scenes``."""
    if split not in KITTI2015_SPLITS:
        raise ValueError(f"KITTI 2015 split must be one of {KITTI2015_SPLITS}, got '{split}'")
    scenes = sorted(int(s) for s in scenes)
    val = set(int(i) for i in validate_indices)
    if split == "train":
        return [s for s in scenes if s not in val]
    if split == "val":
        return [s for s in scenes if s in val]
    return scenes


class Kitti2015Dataset(Dataset):
    """KITTI 2015 multi-frame stereo samples with scene flow ground truth (module docstring).

    Args:
        data_path: the folder holding ``data_scene_flow`` (and ``data_scene_flow_multiview``,
            ``data_scene_flow_calib``).
        split: "train", "val", "full" or "test".
        frame_ids: offsets from frame 10, target 0 included.
        image_hw: (H, W) of the returned images (K scaled); None keeps the original size (which
            differs between recording dates, so batches need image_hw or batch size 1).
        requirements: "gt_depth" and/or "mask" (the mask, all ones, is always given).
        load_gt: read the scene flow ground truth (default: for every split but "test").
        gt_variant: "occ" or "noc".
    """

    def __init__(
        self,
        data_path: PathLike,
        split: str = "train",
        frame_ids: Sequence[int] = (0, 1),
        image_hw: Optional[Sequence[int]] = None,
        requirements: Union[str, Sequence[str], None] = (),
        convention: str = "half_pixel",
        load_gt: Optional[bool] = None,
        gt_variant: str = "occ",
        validate_indices: Sequence[int] = VALIDATE_INDICES,
        augment: bool = False,
        crop_hw: Optional[Sequence[int]] = None,
        crop_scale: Sequence[float] = (1.0, 1.0),
        color_jitter_prob: float = 0.5,
        color_jitter_strengths: Sequence[float] = (0.2, 0.2, 0.2, 0.05),
        seed: int = 0,
    ):
        self.root = Path(data_path)
        if not self.root.is_dir():
            raise FileNotFoundError(f"KITTI 2015 root not found: {self.root}")
        if split not in KITTI2015_SPLITS:
            raise ValueError(f"KITTI 2015 split must be one of {KITTI2015_SPLITS}, got '{split}'")
        self.split = split
        self.subset = "testing" if split == "test" else "training"
        ids = tuple(int(f) for f in frame_ids)
        if 0 not in ids or len(set(ids)) != len(ids):
            raise ValueError(f"frame_ids {list(ids)} must contain 0 and no offset twice")
        if any(10 + f < 0 or 10 + f > 20 for f in ids):
            raise ValueError(f"frame_ids {list(ids)}: KITTI 2015 frames run from 00 to 20 (offsets -10..10)")
        self.frame_ids = ids
        self.image_hw = None if image_hw is None else (int(image_hw[0]), int(image_hw[1]))
        if isinstance(requirements, str):
            requirements = [r for r in re.split(r"[\s,()\[\]]+", requirements) if r]
        reqs = tuple({"depth_gt": "gt_depth"}.get(r, r) for r in (requirements or ()))
        for r in reqs:
            if r not in REQUIREMENTS:
                raise ValueError(f"data requirement '{r}' is not available for KITTI 2015 (available: {REQUIREMENTS})")
        self.requirements = reqs
        self.convention = convention
        self.load_gt = (split != "test") if load_gt is None else bool(load_gt)
        if self.load_gt and split == "test":
            raise ValueError("KITTI 2015 testing scenes have no ground truth: use load_gt=False with split='test'")
        if "gt_depth" in reqs and not self.load_gt:
            raise ValueError("requirement 'gt_depth' needs the disparity ground truth (load_gt=True, not split 'test')")
        if gt_variant not in ("occ", "noc"):
            raise ValueError(f"gt_variant must be 'occ' or 'noc', got '{gt_variant}'")
        self.gt_variant = gt_variant
        self.validate_indices = tuple(int(i) for i in validate_indices)
        self.augment = bool(augment)
        self.crop_hw = None if crop_hw is None else (int(crop_hw[0]), int(crop_hw[1]))
        self.crop_scale = (float(crop_scale[0]), float(crop_scale[1]))
        if not 0.0 < self.crop_scale[0] <= self.crop_scale[1] <= 1.0:
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {crop_scale}")
        self.color_jitter_prob = float(color_jitter_prob)
        self.color_jitter_strengths = tuple(float(s) for s in color_jitter_strengths)
        self.seed = int(seed)
        self.epoch = 0
        self._calib: Dict[int, StereoCalibration] = {}

        self.image_dirs = [self._camera_dirs(i) for i in range(2)]
        scenes = self._find_scenes()
        self.scenes = kitti_2015_split_indices(split, scenes, self.validate_indices)
        if not self.scenes:
            raise ValueError(f"KITTI 2015: split '{split}' selects no scene of the {len(scenes)} found in "
                             f"{self.root / 'data_scene_flow' / self.subset}")
        # Check every file now, so that a broken download fails at construction, naming the file.
        self._files = {s: self._scene_files(s) for s in self.scenes}
        if self.load_gt:
            for s in self.scenes:
                for path in self._gt_files(s).values():
                    if not path.is_file():
                        raise FileNotFoundError(f"KITTI 2015: ground truth file not found: {path}")

    # ----------------------------------------------------------------------------- files
    def _camera_dirs(self, cam: int) -> List[Path]:
        """Existing image folders of camera ``cam`` (0 = image_2, 1 = image_3), in lookup order."""
        dirs = []
        for base in ("data_scene_flow", "data_scene_flow_multiview"):
            for name in CAMERA_FOLDERS[cam]:
                d = self.root / base / self.subset / name
                if d.is_dir():
                    dirs.append(d)
        return dirs

    def _find_scenes(self) -> List[int]:
        if not self.image_dirs[0]:
            raise FileNotFoundError(
                f"KITTI 2015: no left image folder under {self.root} (looked for "
                f"data_scene_flow[_multiview]/{self.subset}/image_2[_jpg])")
        scenes = set()
        for d in self.image_dirs[0]:
            for entry in os.scandir(d):
                stem, suffix = os.path.splitext(entry.name)
                m = _SCENE_10.match(stem)
                if m and suffix.lower() in IMAGE_SUFFIXES:
                    scenes.add(int(m.group(1)))
        if not scenes:
            raise FileNotFoundError(f"KITTI 2015: no %06d_10 image in {[str(d) for d in self.image_dirs[0]]}")
        return sorted(scenes)

    def _image_file(self, scene: int, cam: int, frame: int) -> Path:
        dirs = self.image_dirs[cam]
        if frame not in (10, 11):  # only the multiview folders hold the other frames
            dirs = [d for d in dirs if d.parent.parent.name == "data_scene_flow_multiview"] or dirs
        for d in dirs:
            for suffix in IMAGE_SUFFIXES:
                p = d / f"{scene:06d}_{frame:02d}{suffix}"
                if p.is_file():
                    return p
        looked = [str(d / f"{scene:06d}_{frame:02d}.png") for d in dirs] or [
            f"data_scene_flow[_multiview]/{self.subset}/{CAMERA_FOLDERS[cam][0]}/{scene:06d}_{frame:02d}.png"]
        raise FileNotFoundError(f"KITTI 2015: image of scene {scene:06d} frame {frame:02d} not found "
                                f"(.png or .jpg); looked for {looked}")

    def _scene_files(self, scene: int) -> List[List[Path]]:
        return [[self._image_file(scene, cam, 10 + off) for cam in range(2)] for off in self.frame_ids]

    def _gt_files(self, scene: int) -> Dict[str, Path]:
        gt = self.root / "data_scene_flow" / "training"
        v = self.gt_variant
        name = f"{scene:06d}_10.png"
        return {"disp0": gt / f"disp_{v}_0" / name, "disp1": gt / f"disp_{v}_1" / name,
                "flow": gt / f"flow_{v}" / name, "obj_map": gt / "obj_map" / name}

    def calibration(self, scene: int) -> StereoCalibration:
        """The scene's stereo calibration: its calib_cam_to_cam file, else the width fallback."""
        if scene not in self._calib:
            path = self.root / "data_scene_flow_calib" / self.subset / "calib_cam_to_cam" / f"{scene:06d}.txt"
            if path.is_file():
                self._calib[scene] = read_stereo_calibration(path)
            else:
                left = self._files[scene][self.frame_ids.index(0)][0]
                _, width = image_size(left)
                self._calib[scene] = fallback_calibration(width, what=str(left))
        return self._calib[scene]

    # ----------------------------------------------------------------------------- samples
    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.scenes)

    def read_ground_truth(self, scene: int) -> Dict[str, torch.Tensor]:
        """The scene's ground truth at the original resolution, under the contract's keys."""
        files = self._gt_files(scene)
        disp0, valid0 = read_disparity_png(files["disp0"])
        disp1, valid1 = read_disparity_png(files["disp1"])
        flow, flow_valid = read_flow_png(files["flow"])
        obj_map = read_object_map_png(files["obj_map"])
        shapes = {k: a.shape[:2] for k, a in (("disp0", disp0), ("disp1", disp1), ("flow", flow), ("obj_map", obj_map))}
        if len(set(shapes.values())) != 1:
            raise ValueError(f"KITTI 2015 scene {scene:06d}: ground truth sizes differ: "
                             + ", ".join(f"{files[k]} {v}" for k, v in shapes.items()))
        return {
            "kitti2015_disp0": torch.from_numpy(np.where(valid0, disp0, 0.0).astype(np.float32))[None],
            "kitti2015_disp1": torch.from_numpy(np.where(valid1, disp1, 0.0).astype(np.float32))[None],
            "kitti2015_flow": torch.from_numpy(np.ascontiguousarray(flow.transpose(2, 0, 1), dtype=np.float32)),
            "kitti2015_flow_valid": torch.from_numpy(flow_valid.astype(np.float32))[None],
            "kitti2015_obj_map": torch.from_numpy(obj_map.astype(np.int64))[None],
        }

    def __getitem__(self, index: int) -> Dict:
        if index < 0:
            index += len(self)
        scene = self.scenes[index]
        files = self._files[scene]
        flat = [p for row in files for p in row]
        T, N = len(self.frame_ids), 2
        calib = self.calibration(scene)
        K0 = torch.from_numpy(calib.K).float()
        rng = np.random.default_rng([self.seed, self.epoch, index])

        if self.augment:
            decoded = [read_image(p)[0] for p in flat]
            native_hw = tuple(decoded[0].shape[:2])
        else:
            reads = [read_image(p, target_hw=self.image_hw) for p in flat]
            decoded = [rgb for rgb, _ in reads]
            native_hw = tuple(reads[0][1])
            for p, (_, hw) in zip(flat, reads):
                if tuple(hw) != native_hw:
                    raise ValueError(f"KITTI 2015 scene {scene:06d}: {p} is {hw[1]}x{hw[0]}, {flat[0]} is "
                                     f"{native_hw[1]}x{native_hw[0]}")
        if calib.image_hw is not None and tuple(calib.image_hw) != native_hw:
            raise ValueError(f"KITTI 2015 scene {scene:06d}: the images are {native_hw[1]}x{native_hw[0]} but the "
                             f"calibration ({calib.source}) is for {calib.image_hw[1]}x{calib.image_hw[0]}")
        gt = self.read_ground_truth(scene) if self.load_gt else {}
        if gt and tuple(gt["kitti2015_disp0"].shape[-2:]) != native_hw:
            raise ValueError(f"KITTI 2015 scene {scene:06d}: ground truth is {tuple(gt['kitti2015_disp0'].shape[-2:])}, "
                             f"the images {native_hw}")
        K_gt = K0[0].clone()
        out_hw = self.image_hw or native_hw
        jitter = None
        if self.augment:
            images = torch.from_numpy(np.stack(decoded))
            if any(tuple(d.shape[:2]) != native_hw for d in decoded):
                raise ValueError(f"KITTI 2015 scene {scene:06d}: the images of the sample differ in size")
            images = images.permute(0, 3, 1, 2).reshape(T, N, 3, *native_hw)
            top, left, (ch, cw), jitter = self._draw(native_hw, rng)
            out_hw = self.image_hw or (ch, cw)
            images, K = crop_views(images, K0, top, left, (ch, cw))
            images, K = resize_views(images, K, out_hw, self.convention)
            K_gt = K_gt.clone()
            K_gt[0, 2] -= left
            K_gt[1, 2] -= top
            gt = {k: v[..., top:top + ch, left:left + cw].contiguous() for k, v in gt.items()}
        else:
            # read_image may decode at 1/2, 1/4, 1/8 size: K follows original size -> out_hw.
            images, _ = resize_views(decoded, K0.repeat(T, 1, 1), out_hw, self.convention)
            images = images.reshape(T, N, 3, *out_hw)
            K = resize_intrinsics(K0, native_hw, out_hw, self.convention)
        sample: Dict = {
            "image": images.float(),
            "K": K.float(),
            "extrinsics": torch.from_numpy(calib.T_rig_cam).float(),
            "mask": torch.ones(N, 1, *out_hw),
            "frame_ids": torch.tensor(self.frame_ids, dtype=torch.int64),
        }
        if self.augment:
            sample["image_aug"] = (apply_color_jitter(sample["image"], jitter, per_camera=False)
                                   if jitter is not None else sample["image"].clone())
        if gt:
            sample.update(gt)
            sample["kitti2015_K"] = K_gt.float()
            if "gt_depth" in self.requirements:
                disp = gt["kitti2015_disp0"]
                depth = torch.where(disp > 0, float(K_gt[0, 0]) * calib.baseline / disp.clamp(min=1e-6),
                                    torch.zeros_like(disp))
                sample["depth_gt"] = torch.stack([depth, torch.zeros_like(depth)])
        sample["meta"] = {
            "dataset": "kitti_2015", "scene": f"{scene:06d}", "index": index, "split": self.split,
            "camera_names": ["image_2", "image_3"], "files": [str(p) for p in files[self.frame_ids.index(0)]],
            "baseline": float(calib.baseline),
        }
        return sample

    def _draw(self, hw: Tuple[int, int], rng: np.random.Generator):
        """Crop box and colour jitter, drawn in a fixed order."""
        top, left, (ch, cw) = draw_crop_box(hw, self.crop_hw, self.crop_scale, rng)
        jitter = draw_color_jitter(rng, self.color_jitter_prob, self.color_jitter_strengths)
        return top, left, (ch, cw), jitter
