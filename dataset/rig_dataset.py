"""What the multi-camera rig adapters (DDAD, nuScenes) share: argument checks, reading the views
of all frames and cameras, intrinsics that follow the resize, lidar depth caching and the
per-camera colour jitter of VFDepth (one draw per camera shared by its frames).

Fast data path (DESIGN.md, "What users ask for" 6): frames are read by a
:class:`dataset.image_io.FrameReader` (reduced-size decoding, and with ``frame_cache_dir`` an
on-disk cache of the resized frames), and with ``color_aug_on_device`` a sample carries its jitter
draws (key ``color_jitter``) instead of ``image_aug``, which the trainer then computes on the
training device (:func:`dataset.transforms.apply_batch_color_jitter`): the workers are spared
the per-pixel colour work, which a GPU does in a fraction of the time."""

import os
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from geometry import resize_intrinsics

from .image_io import DepthCache, FrameReader
from .masks import MaskSet
from .transforms import COLOR_JITTER_KEY, apply_color_jitter, sample_color_jitter

KNOWN_REQUIREMENTS = ("gt_pose", "gt_depth", "mask")


def parse_requirements(requirements: Union[str, Iterable[str], None]) -> Tuple[str, ...]:
    """Requirements as a tuple of names. Accepts a sequence (``["gt_pose", "mask"]``) or the
    reference's string form ``"(gt_pose, gt_depth, mask)"``; an unknown name is an error."""
    if requirements is None:
        return ()
    if isinstance(requirements, str):
        items = [r.strip(" ()[]'\"") for r in requirements.split(",")]
    else:
        items = [str(r).strip() for r in requirements]
    items = [r for r in items if r]
    unknown = [r for r in items if r not in KNOWN_REQUIREMENTS]
    if unknown:
        raise ValueError(f"unknown requirement(s) {unknown}; allowed: {', '.join(KNOWN_REQUIREMENTS)}")
    return tuple(dict.fromkeys(items))


def check_frame_ids(frame_ids: Sequence[int]) -> Tuple[int, ...]:
    frame_ids = tuple(int(f) for f in frame_ids)
    if 0 not in frame_ids:
        raise ValueError(f"frame_ids must contain the target frame 0, got {list(frame_ids)}")
    if len(set(frame_ids)) != len(frame_ids):
        raise ValueError(f"frame_ids must not repeat, got {list(frame_ids)}")
    return frame_ids


def jitter_generator(seed: Optional[int], epoch: int, index: int) -> Optional[torch.Generator]:
    """A generator for one item's augmentation: deterministic in (seed, epoch, index), so the
    same run gives the same augmentation whatever the number of workers; None (the global torch
    RNG) when seed is None."""
    if seed is None:
        return None
    mixed = (int(seed) * 1_000_003 + int(epoch)) * 1_000_000_007 + int(index)
    return torch.Generator().manual_seed(mixed % (2**63 - 1))


class RigDataset(Dataset):
    """Base of the multi-camera adapters; subclasses index their data and build samples with
    :meth:`read_views`, :meth:`resized_intrinsics` and :meth:`add_color_jitter`.

    Args (shared by DDADDataset and NuScenesDataset, documented there): cameras, frame_ids,
    image_hw, requirements, mask_path, depth_cache, convention, color_jitter, seed;
    default_cache_root: where the depth cache goes when depth_cache is True (None: per scene,
    decided by the subclass); and the fast data path:
        reduced_decode: decode frames at reduced size where that is exact (default); False decodes
            them at full size first (the plain path, for comparisons).
        frame_cache_dir: folder of the resized-frame cache (``data.cache_dir``), None for none.
        color_aug_on_device: with color_jitter, return the draws under ``color_jitter`` instead of
            ``image_aug`` (``data.color_aug_on_device``; the trainer applies them).
    """

    dataset_name = ""

    def __init__(self, cameras: Sequence[str], frame_ids: Sequence[int], image_hw: Sequence[int],
                 requirements: Union[str, Sequence[str], None], mask_path, depth_cache, convention: str,
                 color_jitter: Optional[Sequence[float]], seed: Optional[int], default_cache_root=None,
                 reduced_decode: bool = True, frame_cache_dir=None, color_aug_on_device: bool = False):
        super().__init__()
        self.cameras = tuple(str(c).upper() for c in cameras)
        if not self.cameras:
            raise ValueError("cameras must name at least one camera")
        self.frame_ids = check_frame_ids(frame_ids)
        self.image_hw = (int(image_hw[0]), int(image_hw[1]))
        self.requirements = parse_requirements(requirements)
        self.convention = convention
        self.color_jitter = tuple(float(c) for c in color_jitter) if color_jitter is not None else None
        self.seed = seed
        self.color_aug_on_device = bool(color_aug_on_device)
        self.epoch = 0
        self.frames = FrameReader(self.image_hw, reduced_decode, frame_cache_dir)
        self.masks = MaskSet(mask_path if "mask" in self.requirements else None, self.image_hw)
        if isinstance(depth_cache, (str, os.PathLike)):
            self.cache_root: Optional[Path] = Path(depth_cache)
            self.depth_cache = DepthCache(True)
        else:
            self.cache_root = default_cache_root
            self.depth_cache = DepthCache(bool(depth_cache))
        self.items: List = []

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        """Make the augmentation of the coming epoch differ from the last one (call per epoch)."""
        self.epoch = int(epoch)

    def set_frame_reading(self, reduced_decode: bool = True, frame_cache_dir=None) -> None:
        """Choose how frames are read from now on (``tools/benchmark.py --loader`` times the plain
        and the fast path on one dataset; DataLoader workers started afterwards inherit it)."""
        self.frames = FrameReader(self.image_hw, reduced_decode, frame_cache_dir)

    def read_views(self, paths: Sequence[Sequence[Path]]) -> Tuple[torch.Tensor, List[Tuple[int, int]]]:
        """Images [T, N, 3, H, W] in [0, 1] at image_hw from paths[t][n], and each camera's
        original size (a camera whose frames differ in size is an error naming the file)."""
        T, N = len(paths), len(self.cameras)
        images = torch.empty(T, N, 3, *self.image_hw)
        original_hw: List[Optional[Tuple[int, int]]] = [None] * N
        for t in range(T):
            for n, cam in enumerate(self.cameras):
                rgb, hw = self.frames.read(paths[t][n])
                if original_hw[n] is None:
                    original_hw[n] = hw
                elif original_hw[n] != hw:
                    raise ValueError(f"{paths[t][n]} is {hw[0]}x{hw[1]}, but camera {cam} has "
                                     f"{original_hw[n][0]}x{original_hw[n][1]} images in the other frames")
                # uint8 -> float straight into the sample, one division at the end: no temporary
                # image per view (a warm-cache read is memory-bound; a cached frame is channels
                # first, so this copy reads it in order)
                images[t, n].copy_(torch.from_numpy(rgb).permute(2, 0, 1))
        return images.div_(255.0), original_hw

    def resized_intrinsics(self, K_full: np.ndarray, original_hw: Sequence[Tuple[int, int]]) -> torch.Tensor:
        """K [N, 3, 3] of the original images -> float32 K at image_hw (the decode size does not
        matter: read_image's reduced decoding and the resize compose to this one resize)."""
        return torch.stack([
            resize_intrinsics(torch.from_numpy(np.asarray(K_full[n], dtype=np.float64)), original_hw[n],
                              self.image_hw, self.convention)
            for n in range(len(original_hw))
        ]).float()

    def add_color_jitter(self, sample: Dict, index: int) -> None:
        """Adds ``image_aug``: one jitter draw per camera, shared by its frames, deterministic in
        (seed, epoch, index); with color_aug_on_device the draws themselves instead, under
        ``color_jitter`` (the same draws: the trainer's image_aug is the one made here otherwise).
        Nothing when color_jitter is None."""
        if self.color_jitter is None:
            return
        generator = jitter_generator(self.seed, self.epoch, index)
        params = sample_color_jitter(generator, self.color_jitter, num=len(self.cameras))
        if self.color_aug_on_device:
            sample[COLOR_JITTER_KEY] = params
        else:
            sample["image_aug"] = apply_color_jitter(sample["image"], params, per_camera=True)
