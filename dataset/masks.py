"""Self-occlusion masks (1 = the pixel shows the scene, 0 = the ego vehicle's body), per camera.

Layouts of ``mask_path`` understood (checked in this order):

1. VFDepth's DDAD masks: ``<mask_path>/mask_idx_dict.pkl`` (a pickled dict int(scene folder) ->
   mask set) and ``<mask_path>/<set>/CAMERA_xx_mask.png``: hand-made sets shared by many scenes
   (the camera mounts changed between recording sessions). Only needed for real DDAD.
2. Per scene: ``<mask_path>/<scene>/CAMERA_xx_mask.png``, as this project's synthetic DGP writer
   writes them (``<out>/masks/<scene>/``).
3. One set for every scene: ``<mask_path>/CAMERA_xx_mask.png`` (VFDepth's nuScenes masks
   ``nuscenes_mask/CAM_BACK_mask.png`` etc.; any DDAD-like set copied flat).

The camera name is used as written in the data (``CAMERA_01``, ``CAM_BACK``), falling back to its
lower- and upper-case forms. Masks are read with :func:`dataset.image_io.read_mask` and resized
with INTER_AREA to the image size: edge pixels get soft values (the valid fraction), which the
losses use as weights, as VFDepth's antialiased resize does. ``mask_path=None`` gives all-valid
masks.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from .image_io import read_mask

MASK_INDEX_FILE = "mask_idx_dict.pkl"


class MaskSet:
    """Finds, reads, resizes and caches (in memory, per process) the masks under ``mask_path``."""

    def __init__(self, mask_path: Optional[os.PathLike], image_hw: Sequence[int]):
        self.mask_path = Path(mask_path) if mask_path is not None else None
        self.image_hw = (int(image_hw[0]), int(image_hw[1]))
        self._index: Optional[Dict] = None
        self._cache: Dict[Tuple[str, Tuple[int, int]], torch.Tensor] = {}
        if self.mask_path is not None and not self.mask_path.is_dir():
            raise FileNotFoundError(f"mask_path is not a directory: {self.mask_path}")
        index_file = self.mask_path / MASK_INDEX_FILE if self.mask_path is not None else None
        if index_file is not None and index_file.is_file():
            with open(index_file, "rb") as f:
                self._index = pickle.load(f)  # the reference's own file format (a plain dict)

    @property
    def layout(self) -> str:
        if self.mask_path is None:
            return "none"
        return "mask_sets" if self._index is not None else "per_scene_or_flat"

    def _candidates(self, folder: Path, camera: str) -> List[Path]:
        names = dict.fromkeys((camera, camera.upper(), camera.lower()))
        return [folder / f"{name}_mask.png" for name in names]

    def mask_file(self, camera: str, scene: Optional[str] = None) -> Path:
        """The mask file of ``camera`` for ``scene`` (a scene folder name), following the layouts
        above; FileNotFoundError naming every path tried when there is none."""
        assert self.mask_path is not None
        tried: List[Path] = []
        if self._index is not None:
            if scene is None:
                raise ValueError(f"{self.mask_path / MASK_INDEX_FILE} selects masks per scene, but no scene was given")
            try:
                key = int(Path(scene).name)
            except ValueError as exc:
                raise ValueError(
                    f"{self.mask_path / MASK_INDEX_FILE} maps integer scene folders to mask sets; "
                    f"scene {scene!r} is not an integer"
                ) from exc
            if key not in self._index:
                raise KeyError(f"scene {scene!r} (key {key}) is not in {self.mask_path / MASK_INDEX_FILE}")
            folders = [self.mask_path / str(self._index[key])]
        else:
            folders = ([self.mask_path / Path(scene).name] if scene is not None else []) + [self.mask_path]
        for folder in folders:
            for candidate in self._candidates(folder, camera):
                tried.append(candidate)
                if candidate.is_file():
                    return candidate
        raise FileNotFoundError(
            f"no self-occlusion mask for camera {camera!r}" + (f" of scene {scene!r}" if scene else "")
            + f"; tried {', '.join(str(p) for p in tried)}"
        )

    def get(self, cameras: Sequence[str], scene: Optional[str] = None) -> torch.Tensor:
        """Masks [N, 1, H, W] float32 in [0, 1] for the cameras (all ones without a mask_path)."""
        h, w = self.image_hw
        if self.mask_path is None:
            return torch.ones(len(cameras), 1, h, w)
        masks = []
        for camera in cameras:
            path = str(self.mask_file(camera, scene))
            key = (path, self.image_hw)
            if key not in self._cache:
                self._cache[key] = torch.from_numpy(read_mask(path, self.image_hw))[None]
            masks.append(self._cache[key])
        return torch.stack(masks)
