"""Shared helpers of the dataset writers: deterministic, atomic file output and small conversions.

Determinism: the same input always gives byte-identical files. PNGs use a fixed compression
level, JPEGs a fixed quality, JSON sorted keys and a fixed indent, and ``.npz`` archives a fixed
zip timestamp (``numpy.savez`` stamps each member with the wall clock, so it is not used).
Atomicity: each file is written to a hidden temporary file in its folder and renamed into
place, so a reader never sees half a file.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from datetime import datetime, timedelta, timezone
from typing import Dict, Iterable, Iterator, List, Sequence, Tuple

import cv2
import numpy as np
import torch

from dataset.synthetic.sequence import SyntheticSequence
from geometry import matrix_to_quaternion
from utils.atomic import write_bytes_atomic

PNG_COMPRESSION = 3
JPEG_QUALITY = 95
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip entry can carry


# ----------------------------------------------------------------------------------- files
class FileLog:
    """Collects the paths a writer produced (relative to its root) for the returned summary."""

    def __init__(self, root: str):
        self.root = os.path.abspath(root)
        self.paths: List[str] = []

    def path(self, *parts: str) -> str:
        """Absolute path of ``parts`` under the root; records it (relative) as written."""
        rel = os.path.join(*parts)
        self.paths.append(rel.replace(os.sep, "/"))
        return os.path.join(self.root, rel)

    def summary(self, fmt: str, **extra) -> Dict:
        out = {"format": fmt, "root": self.root, "files": sorted(set(self.paths))}
        out.update(extra)
        return out


def write_bytes(path: str, data: bytes) -> None:
    """Writes ``data`` to ``path`` atomically (temporary file in the same folder, then rename)."""
    write_bytes_atomic(path, data)


def write_text(path: str, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def json_bytes(obj) -> bytes:
    """Canonical JSON: sorted keys, indent 2, trailing newline (what the sha1 names are taken of)."""
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8")


def write_json(path: str, obj) -> bytes:
    data = json_bytes(obj)
    write_bytes(path, data)
    return data


def sha1_hex(data) -> str:
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hashlib.sha1(data).hexdigest()


def npz_bytes(**arrays: np.ndarray) -> bytes:
    """An ``np.load``-compatible compressed .npz archive with fixed member timestamps."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, mode="w", compression=zipfile.ZIP_DEFLATED) as archive:
        for key, value in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)
            info = zipfile.ZipInfo(key + ".npy", date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, member.getvalue())
    return buffer.getvalue()


def write_npz(path: str, **arrays: np.ndarray) -> None:
    write_bytes(path, npz_bytes(**arrays))


def _encode(ext: str, image: np.ndarray, params: Sequence[int]) -> bytes:
    ok, buffer = cv2.imencode(ext, image, list(params))
    if not ok:
        raise OSError(f"cv2 could not encode an image of shape {image.shape} as {ext}")
    return buffer.tobytes()


def rgb_to_bgr(image: np.ndarray) -> np.ndarray:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image [H, W, 3], got {image.dtype} {image.shape}")
    return np.ascontiguousarray(image[:, :, ::-1])


def write_png_rgb(path: str, image: np.ndarray) -> None:
    """Writes an RGB uint8 [H, W, 3] image as an 8-bit PNG (cv2 wants BGR: converted here)."""
    write_bytes(path, _encode(".png", rgb_to_bgr(image), [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION]))


def write_png_gray(path: str, image: np.ndarray) -> None:
    """Writes a single-channel uint8 or uint16 [H, W] image as a PNG."""
    if image.ndim != 2 or image.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"expected a uint8/uint16 [H, W] image, got {image.dtype} {image.shape}")
    write_bytes(path, _encode(".png", np.ascontiguousarray(image), [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION]))


def write_jpeg_rgb(path: str, image: np.ndarray, quality: int = JPEG_QUALITY) -> None:
    write_bytes(path, _encode(".jpg", rgb_to_bgr(image), [cv2.IMWRITE_JPEG_QUALITY, int(quality)]))


def write_image_rgb(path: str, image: np.ndarray, jpeg_quality: int = JPEG_QUALITY) -> None:
    """PNG or JPEG by the file's extension."""
    ext = os.path.splitext(path)[1].lower()
    if ext == ".png":
        write_png_rgb(path, image)
    elif ext in (".jpg", ".jpeg"):
        write_jpeg_rgb(path, image, jpeg_quality)
    else:
        raise ValueError(f"'{path}': images are written as .png or .jpg, not '{ext}'")


def mask_png(self_occlusion: np.ndarray) -> np.ndarray:
    """Self-occlusion mask (1 = scene) -> uint8 0/255 image (255 = valid), the DDAD mask encoding."""
    return np.where(np.asarray(self_occlusion) > 0, 255, 0).astype(np.uint8)


# ------------------------------------------------------------------------------- geometry
def rotation_to_quaternion(R: np.ndarray) -> np.ndarray:
    """R [..., 3, 3] -> unit quaternion [..., 4] (w, x, y, z), w >= 0, float64."""
    return matrix_to_quaternion(torch.as_tensor(np.asarray(R, dtype=np.float64))).numpy()


def pose_json(T: np.ndarray) -> Dict:
    """4x4 T_a_b -> DGP Pose JSON (translation + w-first quaternion of frame b in frame a)."""
    q = rotation_to_quaternion(T[:3, :3])
    t = T[:3, 3]
    return {
        "rotation": {"qw": float(q[0]), "qx": float(q[1]), "qy": float(q[2]), "qz": float(q[3])},
        "translation": {"x": float(t[0]), "y": float(t[1]), "z": float(t[2])},
    }


def invert(T: np.ndarray) -> np.ndarray:
    """Inverse of rigid transforms [..., 4, 4] (numpy, float64)."""
    T = np.asarray(T, dtype=np.float64)
    out = np.zeros_like(T)
    R_t = np.swapaxes(T[..., :3, :3], -1, -2)
    out[..., :3, :3] = R_t
    out[..., :3, 3] = -(R_t @ T[..., :3, 3:4])[..., 0]
    out[..., 3, 3] = 1.0
    return out


def transform_points(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Applies T [4, 4] to points [N, 3] (float64)."""
    points = np.asarray(points, dtype=np.float64)
    return points @ T[:3, :3].T + T[:3, 3]


# --------------------------------------------------------------------------------- time
def utc_from_us(timestamp_us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=int(timestamp_us))


def rfc3339(timestamp_us: int) -> str:
    """Microseconds since the epoch -> '2020-09-13T12:26:40.000000Z' (DGP's timestamp strings)."""
    return utc_from_us(timestamp_us).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def frame_timestamps_us(seq: SyntheticSequence, start_us: int) -> np.ndarray:
    """Integer microsecond timestamps of the frames, starting at ``start_us``; strictly increasing."""
    rel = np.rint((np.asarray(seq.timestamps, dtype=np.float64) - float(seq.timestamps[0])) * 1e6).astype(np.int64)
    if len(rel) > 1 and np.any(np.diff(rel) <= 0):
        raise ValueError(f"sequence '{seq.name}': timestamps must be strictly increasing")
    return int(start_us) + rel


# ---------------------------------------------------------------------------- sequences
def check_sequence(seq: SyntheticSequence, min_frames: int = 1) -> None:
    """Raises ValueError naming the field when a sequence's arrays are inconsistent."""
    if not isinstance(seq, SyntheticSequence):
        raise TypeError(f"expected a SyntheticSequence, got {type(seq).__name__}")
    T, N = seq.images.shape[:2]
    H, W = seq.image_hw
    expected = {
        "images": (T, N, H, W, 3),
        "depth": (T, N, H, W),
        "object_ids": (T, N, H, W),
        "scene_flow_fwd": (T, N, H, W, 3),
        "scene_flow_bwd": (T, N, H, W, 3),
        "optical_flow_fwd": (T, N, H, W, 2),
        "optical_flow_bwd": (T, N, H, W, 2),
        "K": (N, 3, 3),
        "T_rig_cam": (N, 4, 4),
        "timestamps": (T,),
        "T_world_rig": (T, 4, 4),
        "T_rig_lidar": (4, 4),
        "self_occlusion": (N, H, W),
    }
    for name, shape in expected.items():
        value = getattr(seq, name)
        if tuple(np.shape(value)) != shape:
            raise ValueError(f"sequence '{seq.name}': {name} has shape {tuple(np.shape(value))}, expected {shape}")
    if seq.images.dtype != np.uint8:
        raise ValueError(f"sequence '{seq.name}': images must be uint8 RGB, got {seq.images.dtype}")
    if len(seq.camera_names) != N:
        raise ValueError(f"sequence '{seq.name}': {len(seq.camera_names)} camera names for {N} cameras")
    if len(seq.lidar_points) != T:
        raise ValueError(f"sequence '{seq.name}': {len(seq.lidar_points)} lidar clouds for {T} frames")
    if T < min_frames:
        raise ValueError(f"sequence '{seq.name}': {T} frames, this format needs at least {min_frames}")


def iterate_sequences(sequences: Iterable[SyntheticSequence], min_frames: int = 1,
                      allow_empty: bool = False) -> Iterator[Tuple[int, SyntheticSequence]]:
    """(position, sequence) over a list or a generator (consumed once); checks each and the names."""
    seen = set()
    count = 0
    for position, seq in enumerate(sequences):
        check_sequence(seq, min_frames)
        if seq.name in seen:
            raise ValueError(f"two sequences are named '{seq.name}': scene names must be unique")
        seen.add(seq.name)
        count += 1
        yield position, seq
    if count == 0 and not allow_empty:
        raise ValueError("no sequences to write")


def scene_number(seq: SyntheticSequence, position: int) -> int:
    """The scene's number: its name when that is an integer ("000003" -> 3), else its position."""
    return int(seq.name) if seq.name.isdigit() else position


def resolve_val(names: Sequence[str], val_scenes) -> List[str]:
    """Validation scene names. ``val_scenes``: None (the last scene; the only scene goes to both
    splits), or scene names / list positions. Returns the names in the input order."""
    if val_scenes is None:
        return [names[-1]]
    chosen = set()
    for item in val_scenes:
        if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            if not -len(names) <= item < len(names):
                raise ValueError(f"val_scenes: position {item} out of range for {len(names)} scenes")
            chosen.add(names[item])
        elif item in names:
            chosen.add(item)
        else:
            raise ValueError(f"val_scenes: unknown scene '{item}' (scenes: {list(names)})")
    return [n for n in names if n in chosen]


def train_val_split(names: Sequence[str], val_scenes) -> Tuple[List[str], List[str]]:
    """(train, val) names: everything not in val trains; a single scene is in both splits."""
    val = resolve_val(names, val_scenes)
    if len(names) == 1 and val_scenes is None:
        return list(names), list(names)
    train = [n for n in names if n not in val]
    return train, val
