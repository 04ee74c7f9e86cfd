"""Monocular image sequences: DAVIS, any folder of frames, or a video file: :class:`ImageFolderDataset`.

Sources (``data_path``):

- a **video file** (``.mp4 .avi .mov .mkv .webm .m4v .mpg .mpeg .wmv``): one sequence, decoded
  once with ``cv2.VideoCapture`` at construction and kept in memory (resized to ``image_hw`` when
  given, so a long video costs T x H x W x 3 bytes at that size); frames are named
  ``frame_%06d`` by their index;
- a **DAVIS root** (holding ``JPEGImages/<resolution>/<scene>/*.jpg``, spec formats.md §6) or the
  ``JPEGImages/<resolution>`` folder itself: every scene folder, or those chosen by ``scenes`` (a
  name or a list) or by ``split`` (a scene list such as ``ImageSets/2017/val.txt``);
- a **folder of images** (sorted by file name): one sequence; or a folder of such folders: one
  sequence per sub-folder (filtered by ``scenes`` / ``split`` like DAVIS).

Samples are sliding windows of frames: the target frame i and i + offset for each offset in
``frame_ids`` (e.g. [0, -1, 1], [-1, 0] or multi-mono-sf's 5-frame window [-3, -2, -1, 0, 1]); a
window that leaves its sequence is excluded. The sample is named after the target frame
(``meta["name"]``, the file stem). One camera: N = 1, extrinsics the identity, mask all ones.

Intrinsics, in this order of precedence:

1. ``intrinsics``: a 3x3 matrix, or a file holding one: ``.json`` (a list of 3 lists of 3, a flat
   list of 9, ``{"K": ...}`` or ``{"fx", "fy", "cx", "cy"}``), ``.txt`` (9 numbers separated by
   spaces, commas or new lines), ``.npy`` (9 values). In pixels of the original images, or
   **normalised** (fx and cx divided by the image width, fy and cy by the height, as monodepth2 /
   manydepth store them): a matrix is taken as normalised when fx < 10 and cx <= 1 (a focal
   length under 10 px is not a real camera's); ``intrinsics_normalised`` forces either reading. A
   normalised K becomes pixels by multiplying row 0 by W and row 1 by H (so fx = value * W
   exactly).
2. ``assumed_hfov_deg``: fx = fy = (W / 2) / tan(hfov / 2).
3. ``assumed_focal_px`` (default 700, multi-mono-sf's assumption for DAVIS): fx = fy = f at the
   original resolution.

For 2 and 3 the principal point is the image centre: ((W - 1) / 2, (H - 1) / 2) in the
``"half_pixel"`` convention (the exact centre when integer coordinates are pixel centres),
(W / 2, H / 2) in the ``"reference"`` convention (multi-mono-sf). K is then scaled to ``image_hw``.

Errors name the file: a malformed intrinsics file (wrong count of numbers, non-numeric text, a
non-positive focal length, a last row other than (0, 0, 1)), an empty folder (with the extensions
looked for), an unreadable video, a corrupt image (raised by :func:`dataset.image_io.read_image`
when the sample is loaded).
"""
from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from geometry import resize_intrinsics

from .image_io import read_image, resize_rgb
from .splits import read_scene_list
from .transforms import resize_views

PathLike = Union[str, os.PathLike]

__all__ = ["ImageFolderDataset", "IntrinsicsError", "load_intrinsics", "intrinsics_to_pixels",
           "assumed_intrinsics", "IMAGE_EXTENSIONS", "VIDEO_EXTENSIONS"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
DAVIS_ASSUMED_FOCAL_PX = 700.0


class IntrinsicsError(ValueError):
    """An intrinsics file or matrix that cannot be used; the message names the file and the expected form."""


_EXPECTED = ("a 3x3 intrinsics matrix [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] in pixels or normalised "
             "(fx, cx / width; fy, cy / height)")


def _matrix_from_json(obj, source: str) -> np.ndarray:
    if isinstance(obj, dict):
        if "K" in obj:
            return _matrix_from_json(obj["K"], source)
        keys = ("fx", "fy", "cx", "cy")
        if all(k in obj for k in keys):
            try:
                fx, fy, cx, cy = (float(obj[k]) for k in keys)
            except (TypeError, ValueError):
                raise IntrinsicsError(f"{source}: fx, fy, cx, cy must be numbers, got {[obj[k] for k in keys]}") from None
            return np.array([[fx, float(obj.get("skew", 0.0)), cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
        raise IntrinsicsError(f"{source}: a JSON object must hold 'K' or 'fx', 'fy', 'cx', 'cy'; got keys "
                              f"{sorted(obj)}; expected {_EXPECTED}")
    try:
        values = np.asarray(obj, dtype=np.float64)
    except (TypeError, ValueError):
        raise IntrinsicsError(f"{source}: non-numeric values in the intrinsics; expected {_EXPECTED}") from None
    return values


def load_intrinsics(path: PathLike) -> np.ndarray:
    """Read a 3x3 intrinsics matrix (float64) from a .json, .txt or .npy file (module docstring);
    IntrinsicsError naming the file when it is malformed. Not yet converted from normalised units."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"intrinsics file not found: {path}")
    suffix = path.suffix.lower()
    source = str(path)
    if suffix == ".json":
        try:
            obj = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise IntrinsicsError(f"{source}: not valid JSON ({err}); expected {_EXPECTED}") from None
        values = _matrix_from_json(obj, source)
    elif suffix == ".npy":
        try:
            values = np.load(path, allow_pickle=False)
        except ValueError as err:
            raise IntrinsicsError(f"{source}: not a numeric .npy array ({err}); expected {_EXPECTED}") from None
        if not np.issubdtype(values.dtype, np.number):
            raise IntrinsicsError(f"{source}: array of dtype {values.dtype} is not numeric; expected {_EXPECTED}")
        values = values.astype(np.float64)
    else:  # .txt and anything else: whitespace / comma separated numbers
        tokens = [t for t in re.split(r"[\s,;\[\]]+", path.read_text()) if t]
        try:
            values = np.array([float(t) for t in tokens], dtype=np.float64)
        except ValueError:
            bad = next(t for t in tokens if not _is_float(t))
            raise IntrinsicsError(f"{source}: '{bad}' is not a number; expected 9 numbers, {_EXPECTED}") from None
    return validate_intrinsics(values, source)


def _is_float(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def validate_intrinsics(values, source: str = "intrinsics") -> np.ndarray:
    """``values`` (9 numbers or 3x3) -> a checked 3x3 float64 matrix; IntrinsicsError naming ``source``."""
    values = np.asarray(values, dtype=np.float64)
    if values.size != 9:
        raise IntrinsicsError(f"{source}: found {values.size} numbers (shape {tuple(values.shape)}), expected 9: {_EXPECTED}")
    K = values.reshape(3, 3)
    if not np.all(np.isfinite(K)):
        raise IntrinsicsError(f"{source}: non-finite values in {K.tolist()}")
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise IntrinsicsError(f"{source}: focal lengths must be positive, got fx={K[0, 0]}, fy={K[1, 1]}; expected {_EXPECTED}")
    if not np.allclose(K[2], (0.0, 0.0, 1.0)) or abs(K[1, 0]) > 0:
        raise IntrinsicsError(f"{source}: not an upper-triangular pinhole matrix with last row (0, 0, 1): {K.tolist()}")
    return K


def is_normalised(K: np.ndarray) -> bool:
    """The detection rule: normalised when fx < 10 and cx <= 1."""
    return bool(K[0, 0] < 10.0 and K[0, 2] <= 1.0)


def intrinsics_to_pixels(K: np.ndarray, image_hw: Sequence[int], normalised: Optional[bool] = None) -> np.ndarray:
    """K in pixels of an image of size ``image_hw``: a normalised K (detected with :func:`is_normalised`
    unless ``normalised`` says) has row 0 multiplied by W and row 1 by H; a pixel K is returned as is."""
    K = np.array(K, dtype=np.float64)
    if normalised is None:
        normalised = is_normalised(K)
    if normalised:
        K[0] *= float(image_hw[1])
        K[1] *= float(image_hw[0])
    return K


def assumed_intrinsics(image_hw: Sequence[int], focal_px: Optional[float] = None, hfov_deg: Optional[float] = None,
                       convention: str = "half_pixel") -> np.ndarray:
    """K of an uncalibrated camera: focal from ``hfov_deg`` (horizontal field of view, degrees) or
    ``focal_px``; principal point at the image centre ((W-1)/2, (H-1)/2), or (W/2, H/2) for the
    "reference" convention."""
    h, w = float(image_hw[0]), float(image_hw[1])
    if hfov_deg is not None:
        if not 0.0 < hfov_deg < 180.0:
            raise ValueError(f"assumed_hfov_deg must lie in (0, 180) degrees, got {hfov_deg}")
        focal = (w / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
    elif focal_px is not None:
        if not focal_px > 0:
            raise ValueError(f"assumed_focal_px must be positive, got {focal_px}")
        focal = float(focal_px)
    else:
        raise ValueError("assumed_intrinsics needs focal_px or hfov_deg")
    if convention == "reference":
        cx, cy = w / 2.0, h / 2.0
    else:
        cx, cy = (w - 1.0) / 2.0, (h - 1.0) / 2.0
    return np.array([[focal, 0.0, cx], [0.0, focal, cy], [0.0, 0.0, 1.0]])


class _Sequence:
    """One sequence: frame files (or in-memory video frames), their names and original size."""

    def __init__(self, name: str, files: List[Path], names: List[str], frames: Optional[List[np.ndarray]] = None,
                 original_hw: Optional[Tuple[int, int]] = None, source: str = ""):
        self.name, self.files, self.names, self.frames = name, files, names, frames
        self.original_hw = original_hw
        self.source = source

    def __len__(self) -> int:
        return len(self.names)


def _list_images(folder: Path, extensions: Sequence[str]) -> List[Path]:
    return sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in extensions), key=lambda p: p.name)


class ImageFolderDataset(Dataset):
    """Sliding windows over DAVIS scenes, folders of frames or a video (module docstring).

    Args:
        data_path: a video file, a DAVIS root, a JPEGImages/<resolution> folder, a folder of
            images or a folder of such folders.
        frame_ids: offsets in sample order, target 0 included.
        image_hw: (H, W) of the returned images (K scaled); None keeps the original size.
        scenes: one scene name or a list (DAVIS / folder of folders); None = all.
        split: a scene-list file selecting scenes (alternative to ``scenes``).
        intrinsics: a 3x3 matrix or a file (json / txt / npy); None: assumed intrinsics.
        intrinsics_normalised: force the reading of ``intrinsics`` (None: detect).
        assumed_focal_px, assumed_hfov_deg: the assumed camera when there is no intrinsics file.
        convention: "half_pixel" or "reference" (resize of K, assumed principal point).
        resolution: DAVIS image set ("480p" or "Full-Resolution").
        extensions: image file suffixes to read (lower case).
    """

    def __init__(
        self,
        data_path: PathLike,
        frame_ids: Sequence[int] = (0, -1, 1),
        image_hw: Optional[Sequence[int]] = None,
        scenes: Union[str, Sequence[str], None] = None,
        split: Optional[PathLike] = None,
        intrinsics: Union[PathLike, np.ndarray, Sequence, None] = None,
        intrinsics_normalised: Optional[bool] = None,
        assumed_focal_px: Optional[float] = DAVIS_ASSUMED_FOCAL_PX,
        assumed_hfov_deg: Optional[float] = None,
        convention: str = "half_pixel",
        resolution: str = "480p",
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
    ):
        self.root = Path(data_path)
        if not self.root.exists():
            raise FileNotFoundError(f"image data not found: {self.root}")
        ids = tuple(int(f) for f in frame_ids)
        if 0 not in ids or len(set(ids)) != len(ids):
            raise ValueError(f"frame_ids {list(ids)} must contain the target frame 0 and no offset twice")
        self.frame_ids = ids
        self.image_hw = None if image_hw is None else (int(image_hw[0]), int(image_hw[1]))
        self.convention = convention
        self.extensions = tuple(e.lower() for e in extensions)
        self.intrinsics_normalised = intrinsics_normalised
        self.assumed_focal_px = assumed_focal_px
        self.assumed_hfov_deg = assumed_hfov_deg
        self._K_file: Optional[np.ndarray] = None
        self._K_source = ""
        if intrinsics is not None:
            if isinstance(intrinsics, (str, os.PathLike)):
                self._K_file = load_intrinsics(intrinsics)
                self._K_source = str(intrinsics)
            else:
                self._K_file = validate_intrinsics(intrinsics, "intrinsics argument")
                self._K_source = "intrinsics argument"
        elif assumed_focal_px is None and assumed_hfov_deg is None:
            raise ValueError("no intrinsics: give an intrinsics file, assumed_focal_px or assumed_hfov_deg")

        wanted: Optional[List[str]] = None
        if split is not None:
            wanted = read_scene_list(split)
        elif scenes is not None:
            wanted = [scenes] if isinstance(scenes, str) else list(scenes)

        self.kind, self.sequences = self._find_sequences(resolution, wanted)
        self.items: List[Tuple[int, int]] = []
        self.num_excluded = 0
        for s, seq in enumerate(self.sequences):
            for i in range(len(seq)):
                if all(0 <= i + off < len(seq) for off in self.frame_ids):
                    self.items.append((s, i))
                else:
                    self.num_excluded += 1
        if not self.items:
            lengths = {seq.name: len(seq) for seq in self.sequences}
            raise ValueError(f"{self.root}: no window of frame_ids {list(self.frame_ids)} fits in the sequences "
                             f"(frames per sequence: {lengths})")

    # ----------------------------------------------------------------------------- sources
    def _folder_sequence(self, folder: Path, name: str) -> _Sequence:
        files = _list_images(folder, self.extensions)
        if not files:
            raise FileNotFoundError(f"no images with extensions {list(self.extensions)} in folder {folder}")
        return _Sequence(name, files, [p.stem for p in files], source=str(folder))

    def _select(self, folders: List[Path], wanted: Optional[List[str]], where: Path) -> List[Path]:
        if wanted is None:
            return folders
        by_name = {f.name: f for f in folders}
        missing = [w for w in wanted if w not in by_name]
        if missing:
            raise FileNotFoundError(f"scene(s) {missing} not found in {where} (scenes there: {sorted(by_name)[:20]})")
        return [by_name[w] for w in wanted]

    def _find_sequences(self, resolution: str, wanted: Optional[List[str]]) -> Tuple[str, List[_Sequence]]:
        root = self.root
        if root.is_file():
            if root.suffix.lower() not in VIDEO_EXTENSIONS:
                raise ValueError(f"{root} is a file but not a video (extensions {list(VIDEO_EXTENSIONS)}); "
                                 "give a folder of images or a video")
            return "video", [self._read_video(root)]
        davis = root / "JPEGImages" / resolution
        kind = "image_folder"
        if davis.is_dir():
            root, kind = davis, "davis"
        elif root.parent.name == "JPEGImages":
            kind = "davis"
        if _list_images(root, self.extensions):
            if wanted is not None and root.name not in wanted:
                raise FileNotFoundError(f"scene(s) {wanted} requested but {root} is a single sequence '{root.name}'")
            return kind, [self._folder_sequence(root, root.name)]
        folders = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.name)
        if not folders:
            raise FileNotFoundError(f"no images with extensions {list(self.extensions)} in folder {root} "
                                    "(and no sub-folders of frames)")
        folders = self._select(folders, wanted, root)
        sequences = [self._folder_sequence(f, f.name) for f in folders]
        return kind, sequences

    def _read_video(self, path: Path) -> _Sequence:
        capture = cv2.VideoCapture(str(path))
        if not capture.isOpened():
            raise ValueError(f"could not open video {path} with OpenCV (missing codec or corrupt file)")
        frames: List[np.ndarray] = []
        original_hw = None
        try:
            while True:
                ok, bgr = capture.read()
                if not ok:
                    break
                if original_hw is None:
                    original_hw = bgr.shape[:2]
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                frames.append(resize_rgb(rgb, self.image_hw) if self.image_hw else rgb)
        finally:
            capture.release()
        if not frames:
            raise ValueError(f"video {path} holds no decodable frame")
        names = [f"frame_{i:06d}" for i in range(len(frames))]
        return _Sequence(path.stem, [path] * len(frames), names, frames=frames,
                         original_hw=(int(original_hw[0]), int(original_hw[1])), source=str(path))

    # ----------------------------------------------------------------------------- geometry
    def intrinsics(self, original_hw: Sequence[int]) -> np.ndarray:
        """K [3, 3] in pixels of an original image of size ``original_hw``."""
        if self._K_file is not None:
            return intrinsics_to_pixels(self._K_file, original_hw, self.intrinsics_normalised)
        return assumed_intrinsics(original_hw, self.assumed_focal_px, self.assumed_hfov_deg, self.convention)

    def _normalised_K(self) -> Optional[np.ndarray]:
        """The intrinsics file's K when it is normalised (then valid at any image size), else None."""
        if self._K_file is None:
            return None
        normalised = self.intrinsics_normalised
        if normalised is None:
            normalised = is_normalised(self._K_file)
        return self._K_file if normalised else None

    # ----------------------------------------------------------------------------- samples
    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Dict:
        if index < 0:
            index += len(self)
        s, i = self.items[index]
        seq = self.sequences[s]
        normalised_K = self._normalised_K()
        rgbs, sizes = [], []
        for off in self.frame_ids:
            j = i + off
            if seq.frames is not None:
                rgbs.append(seq.frames[j])
                sizes.append(seq.original_hw)
                continue
            rgb, hw = read_image(seq.files[j], target_hw=self.image_hw)
            rgbs.append(rgb)
            sizes.append(tuple(hw))
        target_hw = sizes[self.frame_ids.index(0)]
        out_hw = self.image_hw or tuple(target_hw)
        for off, hw in zip(self.frame_ids, sizes):
            if tuple(hw) == tuple(target_hw):
                continue
            what = f"{seq.files[i + off]} is {hw[1]}x{hw[0]} but the target frame {seq.files[i]} is {target_hw[1]}x{target_hw[0]}"
            if normalised_K is None:
                raise ValueError(f"{what}: frames of one window must share a size with pixel intrinsics")
            if self.image_hw is None:
                raise ValueError(f"{what}: give image_hw to resize the frames to one size")
        if normalised_K is not None:
            # A normalised K describes every frame whatever its size: scale it straight to out_hw.
            images = torch.stack([torch.from_numpy(np.ascontiguousarray(resize_rgb(rgb, out_hw))).permute(2, 0, 1)
                                  for rgb in rgbs]).float() / 255.0
            K = torch.from_numpy(intrinsics_to_pixels(normalised_K, out_hw, True)).float()[None]
        else:
            K0 = torch.from_numpy(self.intrinsics(target_hw)).float()
            if seq.frames is not None:
                # In-memory video frames are already at out_hw: only K follows the resize.
                images = torch.from_numpy(np.stack(rgbs)).permute(0, 3, 1, 2).float() / 255.0
                K = resize_intrinsics(K0, target_hw, out_hw, self.convention)[None]
            else:
                # read_image may decode at 1/2, 1/4, 1/8 size: K follows original size -> out_hw.
                images, _ = resize_views(rgbs, K0, out_hw, self.convention)
                K = resize_intrinsics(K0, target_hw, out_hw, self.convention)[None]
        T = len(self.frame_ids)
        target = i
        sample = {
            "image": images.reshape(T, 1, 3, *out_hw).float(),
            "K": K.reshape(1, 3, 3).float(),
            "extrinsics": torch.eye(4)[None],
            "mask": torch.ones(1, 1, *out_hw),
            "frame_ids": torch.tensor(self.frame_ids, dtype=torch.int64),
            "meta": {
                "dataset": self.kind, "scene": seq.name, "index": index, "name": seq.names[target],
                "frame": target, "camera_names": ["camera"], "files": [str(seq.files[target])],
            },
        }
        return sample
