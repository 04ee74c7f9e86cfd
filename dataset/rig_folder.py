"""A camera rig on disk for inference: a folder with one sub-folder of frames per camera and a
calibration file (:class:`RigFolderDataset`, :func:`load_rig_calibration`).

Layout::

    my_rig/
        calibration.json          # or any single *.json in my_rig/, or given explicitly
        front/000000.jpg 000001.jpg ...
        left/000000.jpg ...

Frames are matched across cameras by their position in the sorted file list, so every camera
folder must hold the same number of frames (an error names the folders otherwise). Each camera is
read with :class:`dataset.image_folder.ImageFolderDataset` (one frame per sample), so the image
types, the decoding at reduced size and the intrinsics conventions are those of that reader.

Calibration JSON (this project's format)::

    {"cameras": {
        "front": {"K": [[fx, 0, cx], [0, fy, cy], [0, 0, 1]],
                  "T_rig_cam": [[r00, r01, r02, tx], [r10, r11, r12, ty], [r20, r21, r22, tz], [0, 0, 0, 1]]},
        "left":  {"K": {"fx": ..., "fy": ..., "cx": ..., "cy": ...}, "T_rig_cam": ...}}}

- ``K``: any form the intrinsics files of ``image_folder`` accept (3x3, a flat list of 9,
  ``{"fx", "fy", "cx", "cy"}``), in pixels of that camera's original images or normalised (fx and
  cx divided by the width, fy and cy by the height; taken as normalised when fx < 10 and cx <= 1).
- ``T_rig_cam``: 4x4 row-major, maps points from the camera frame (OpenCV: x right, y down,
  z forward; metres) into the rig frame (any right-handed frame, e.g. DDAD's x forward, y left,
  z up). Its rotation must be orthonormal with determinant +1 and its last row (0, 0, 0, 1).
- The keys of ``cameras`` name the sub-folders (compared case-insensitively); every sub-folder
  that holds images needs an entry, entries without a folder are ignored.

The DGP (DDAD) calibration JSON (``calibration/<sha1>.json``: ``names``, ``intrinsics`` with fx,
fy, cx, cy, ``extrinsics`` as translation + quaternion, T_rig_sensor) is accepted as well.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from .image_folder import IMAGE_EXTENSIONS, ImageFolderDataset, IntrinsicsError, _matrix_from_json, validate_intrinsics

PathLike = Union[str, os.PathLike]

__all__ = ["RigFolderDataset", "CalibrationError", "load_rig_calibration", "find_calibration_file",
           "camera_folders", "is_rig_folder"]


class CalibrationError(ValueError):
    """A rig calibration file that cannot be used; the message names the file, the key and the value."""


_FORMAT = ('{"cameras": {"<camera folder>": {"K": 3x3 intrinsics, "T_rig_cam": 4x4 camera-to-rig}}} '
           '(README "Use on your own data"), or a DGP calibration JSON (names, intrinsics, extrinsics)')


def _has_images(folder: Path) -> bool:
    return any(p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS for p in folder.iterdir())


def camera_folders(root: PathLike) -> List[Path]:
    """The sub-folders of ``root`` that hold images, sorted by name."""
    return sorted((p for p in Path(root).iterdir() if p.is_dir() and _has_images(p)), key=lambda p: p.name)


def find_calibration_file(root: PathLike) -> Optional[Path]:
    """``root``/calibration.json, else the only *.json in ``root``, else None."""
    root = Path(root)
    if (root / "calibration.json").is_file():
        return root / "calibration.json"
    found = sorted(p for p in root.glob("*.json") if p.is_file())
    return found[0] if len(found) == 1 else None


def is_rig_folder(root: PathLike) -> bool:
    """A folder without images of its own, with camera sub-folders and a calibration file."""
    root = Path(root)
    return (root.is_dir() and not _has_images(root) and bool(camera_folders(root))
            and find_calibration_file(root) is not None)


def _transform(value, source: str, key: str) -> np.ndarray:
    try:
        T = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise CalibrationError(f"{source}: {key} must be a 4x4 matrix of numbers, got {value!r}") from None
    if T.size == 12:
        T = np.concatenate([T.reshape(3, 4), [[0.0, 0.0, 0.0, 1.0]]])
    if T.size != 16:
        raise CalibrationError(f"{source}: {key} must be a 4x4 matrix (or its top 3x4 rows), got shape {T.shape}")
    T = T.reshape(4, 4)
    if not np.all(np.isfinite(T)):
        raise CalibrationError(f"{source}: {key} has non-finite values: {T.tolist()}")
    if not np.allclose(T[3], (0.0, 0.0, 0.0, 1.0)):
        raise CalibrationError(f"{source}: {key} must end with the row (0, 0, 0, 1), got {T[3].tolist()}")
    R = T[:3, :3]
    if not np.allclose(R @ R.T, np.eye(3), atol=1e-4) or np.linalg.det(R) < 0:
        raise CalibrationError(f"{source}: the rotation of {key} is not a rotation (orthonormal, det +1): {R.tolist()}")
    return T


def load_rig_calibration(path: PathLike) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """{camera name (lower case): (K [3, 3] as written, pixels or normalised, T_rig_cam [4, 4])}
    from this project's calibration JSON or a DGP one (module docstring); CalibrationError naming
    the file and key otherwise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"calibration file not found: {path}")
    source = str(path)
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CalibrationError(f"{source}: not valid JSON ({err}); expected {_FORMAT}") from None
    out: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}
    if isinstance(raw, dict) and isinstance(raw.get("cameras"), dict):
        for name, entry in raw["cameras"].items():
            where = f"cameras.{name}"
            if not isinstance(entry, dict) or "K" not in entry or "T_rig_cam" not in entry:
                got = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
                raise CalibrationError(f"{source}: {where} must hold 'K' and 'T_rig_cam', got {got}; expected {_FORMAT}")
            try:
                K = validate_intrinsics(_matrix_from_json(entry["K"], f"{source}: {where}.K"), f"{source}: {where}.K")
            except IntrinsicsError as err:
                raise CalibrationError(str(err)) from None
            out[name.lower()] = (K, _transform(entry["T_rig_cam"], source, f"{where}.T_rig_cam"))
    elif isinstance(raw, dict) and all(k in raw for k in ("names", "intrinsics", "extrinsics")):
        from .ddad import _Calibration
        try:
            calib = _Calibration(path)
        except ValueError as err:
            raise CalibrationError(str(err)) from None
        for key in calib.K:
            if calib.K[key][0, 0] <= 0:          # DGP lists the lidar with all-zero intrinsics
                continue
            K = calib.K[key].copy()
            K[0, 1] = calib.skew[key]
            out[key.lower()] = (K, calib.T_rig_sensor[key])
    else:
        got = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
        raise CalibrationError(f"{source}: unknown calibration layout (top level {got}); expected {_FORMAT}")
    if not out:
        raise CalibrationError(f"{source}: no camera in the calibration; expected {_FORMAT}")
    return out


class RigFolderDataset(Dataset):
    """Frames of a rig folder (module docstring), one sample per frame index: image [1, N, 3, H, W],
    K [N, 3, 3] (at ``image_hw``), extrinsics [N, 4, 4] T_rig_cam, mask all ones, frame_ids [0].

    Args:
        root: the rig folder.
        image_hw: (H, W) of the returned images; None keeps the original size (all cameras must
            then share one).
        calibration: the calibration file; default :func:`find_calibration_file` (root).
        convention: intrinsics convention under resize ("half_pixel" or "reference").
    """

    def __init__(self, root: PathLike, image_hw: Optional[Sequence[int]] = None,
                 calibration: Optional[PathLike] = None, convention: str = "half_pixel"):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"rig folder not found: {self.root}")
        folders = camera_folders(self.root)
        if not folders:
            raise FileNotFoundError(f"rig folder {self.root}: no sub-folder with images {list(IMAGE_EXTENSIONS)}")
        calibration = Path(calibration) if calibration is not None else find_calibration_file(self.root)
        if calibration is None:
            raise FileNotFoundError(f"rig folder {self.root}: no calibration file (calibration.json, or a single "
                                    f"*.json in the folder); expected {_FORMAT}")
        self.calibration_file = calibration
        calib = load_rig_calibration(calibration)
        missing = [f.name for f in folders if f.name.lower() not in calib]
        if missing:
            raise CalibrationError(f"{calibration}: no entry for camera folder(s) {missing} of {self.root} "
                                   f"(cameras in the file: {sorted(calib)})")
        self.camera_names = [f.name for f in folders]
        self.cameras = [ImageFolderDataset(f, frame_ids=(0,), image_hw=image_hw, intrinsics=calib[f.name.lower()][0],
                                           convention=convention) for f in folders]
        counts = {name: len(ds) for name, ds in zip(self.camera_names, self.cameras)}
        if len(set(counts.values())) != 1:
            raise ValueError(f"rig folder {self.root}: the cameras hold different numbers of frames {counts}; "
                             "frames are matched by their sorted position, so every camera needs the same count")
        self.extrinsics = torch.from_numpy(np.stack([calib[f.name.lower()][1] for f in folders])).float()
        self.names = list(self.cameras[0].sequences[0].names)
        self.name = self.root.name

    def __len__(self) -> int:
        return len(self.cameras[0])

    def __getitem__(self, index: int) -> Dict:
        views = [ds[index] for ds in self.cameras]
        shapes = {tuple(v["image"].shape[-2:]) for v in views}
        if len(shapes) != 1:
            raise ValueError(f"rig folder {self.root}: frame {index} has different sizes per camera {sorted(shapes)}; "
                             "give image_hw (training.height / width) to resize them to one size")
        image = torch.cat([v["image"] for v in views], dim=1)                     # [1, N, 3, H, W]
        return {
            "image": image,
            "K": torch.cat([v["K"] for v in views], dim=0),
            "extrinsics": self.extrinsics.clone(),
            "mask": torch.ones(image.shape[1], 1, *image.shape[-2:]),
            "frame_ids": torch.zeros(1, dtype=torch.int64),
            "meta": {"scene": self.name, "name": self.names[index], "index": index},
        }
