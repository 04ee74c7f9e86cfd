"""KITTI 2015 PNG formats: disparity (16-bit grey) and optical flow (16-bit RGB), read and written with cv2.

Disparity: uint16, ``d = I / 256``, valid where ``I > 0``. Values range over [0, 256).
Flow: uint16 RGB, ``u = (R - 2^15) / 64``, ``v = (G - 2^15) / 64``, valid = ``B`` (0 or 1); values
range over [-512, +512). cv2 stores channels as BGR, so in cv2's array u is channel 2, v channel 1
and the valid flag channel 0. (PIL cannot read 16-bit RGB PNGs: it silently returns 8 bits.)

Readers return numpy arrays (float32 values, bool masks). Writers accept numpy arrays or torch
tensors, create parent directories and refuse a file name that does not end in ``.png``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Tuple, Union

import cv2
import numpy as np

__all__ = [
    "DISP_SCALE",
    "FLOW_SCALE",
    "FLOW_OFFSET",
    "read_disparity_png",
    "write_disparity_png",
    "read_flow_png",
    "write_flow_png",
    "read_object_map_png",
]

PathLike = Union[str, os.PathLike]

DISP_SCALE = 256.0
FLOW_SCALE = 64.0
FLOW_OFFSET = 2 ** 15
_U16_MAX = 65535


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, without importing torch here
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _describe(img: np.ndarray) -> str:
    channels = 1 if img.ndim == 2 else img.shape[2]
    return f"{img.dtype} with {channels} channel{'s' if channels != 1 else ''}"


def _read_png(path: PathLike, expected: str) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no such file: '{p}' (expected {expected})")
    img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError(f"'{p}' could not be decoded as an image (corrupt or not a PNG); expected {expected}")
    return img


def _prepare_write(path: PathLike) -> Path:
    p = Path(path)
    if p.suffix.lower() != ".png":
        raise ValueError(f"'{p}': KITTI maps must be written as .png (16-bit), got suffix '{p.suffix}'")
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


def _imwrite(p: Path, img: np.ndarray) -> None:
    ok = cv2.imwrite(str(p), img)
    if not ok:
        raise OSError(f"cv2 could not write '{p}'")


# ----------------------------------------------------------------------------------------------
# Disparity
# ----------------------------------------------------------------------------------------------
def read_disparity_png(path: PathLike) -> Tuple[np.ndarray, np.ndarray]:
    """Reads a KITTI disparity PNG. Returns (disp float32 [H, W] = I / 256, valid bool [H, W] = I > 0)."""
    expected = "a 16-bit single-channel PNG (KITTI disparity)"
    img = _read_png(path, expected)
    if img.dtype != np.uint16 or img.ndim != 2:
        raise ValueError(f"'{path}': expected {expected}, got {_describe(img)}")
    disp = img.astype(np.float32) / np.float32(DISP_SCALE)
    return disp, img > 0


def write_disparity_png(path: PathLike, disp, valid=None) -> None:
    """Writes a KITTI disparity PNG (uint16, round(d * 256)).

    ``disp``: [H, W] (or [1, H, W]) disparities in pixels. ``valid``: optional bool mask; by default
    pixels with a finite disparity > 0 are valid. Invalid and non-finite pixels are written as 0.
    Valid disparities are clipped to [0, 65535/256] and rounded to the nearest 1/256; a valid
    pixel whose value would round to 0 (the format's "invalid" code) is stored as the smallest
    positive value, 1 (= 1/256 px), so that it stays valid.
    """
    d = _to_numpy(disp).astype(np.float64)
    if d.ndim == 3 and d.shape[0] == 1:
        d = d[0]
    if d.ndim != 2:
        raise ValueError(f"'{path}': disparity must be [H, W], got shape {d.shape}")
    finite = np.isfinite(d)
    if valid is None:
        ok = finite & (d > 0)
    else:
        v = _to_numpy(valid)
        if v.ndim == 3 and v.shape[0] == 1:
            v = v[0]
        if v.shape != d.shape:
            raise ValueError(f"'{path}': valid mask shape {v.shape} differs from disparity shape {d.shape}")
        ok = v.astype(bool) & finite
    enc = np.rint(np.clip(np.where(ok, d, 0.0), 0.0, _U16_MAX / DISP_SCALE) * DISP_SCALE)
    enc = np.where(ok, np.maximum(enc, 1.0), 0.0).astype(np.uint16)
    _imwrite(_prepare_write(path), enc)


# ----------------------------------------------------------------------------------------------
# Flow
# ----------------------------------------------------------------------------------------------
def read_flow_png(path: PathLike) -> Tuple[np.ndarray, np.ndarray]:
    """Reads a KITTI flow PNG. Returns (flow float32 [H, W, 2] = (u, v), valid bool [H, W])."""
    expected = "a 16-bit 3-channel PNG (KITTI optical flow)"
    img = _read_png(path, expected)
    if img.dtype != np.uint16 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"'{path}': expected {expected}, got {_describe(img)}")
    # cv2 gives BGR: B = valid, G = v, R = u.
    flow = (img[:, :, [2, 1]].astype(np.float32) - np.float32(FLOW_OFFSET)) / np.float32(FLOW_SCALE)
    return flow, img[:, :, 0] > 0


def write_flow_png(path: PathLike, flow, valid=None) -> None:
    """Writes a KITTI flow PNG: uint16 (R, G, B) = (u*64 + 2^15, v*64 + 2^15, valid).

    ``flow``: [H, W, 2] (u, v) — or channels-first [2, H, W]. ``valid``: optional bool [H, W];
    by default the pixels whose flow is finite. Values are rounded to the nearest 1/64 and clipped
    to the uint16 range (about ±512 px). Invalid pixels are stored as zero flow with valid = 0.
    """
    f = _to_numpy(flow).astype(np.float64)
    if f.ndim == 3 and f.shape[-1] != 2 and f.shape[0] == 2:
        f = np.moveaxis(f, 0, -1)
    if f.ndim != 3 or f.shape[-1] != 2:
        raise ValueError(f"'{path}': flow must be [H, W, 2] (or [2, H, W]), got shape {f.shape}")
    finite = np.isfinite(f).all(-1)
    if valid is None:
        ok = finite
    else:
        v = _to_numpy(valid)
        if v.ndim == 3 and v.shape[0] == 1:
            v = v[0]
        if v.shape != f.shape[:2]:
            raise ValueError(f"'{path}': valid mask shape {v.shape} differs from flow shape {f.shape[:2]}")
        ok = v.astype(bool) & finite
    enc = np.rint(np.where(ok[..., None], f, 0.0) * FLOW_SCALE + FLOW_OFFSET)
    enc = np.clip(enc, 0, _U16_MAX).astype(np.uint16)
    bgr = np.stack([ok.astype(np.uint16), enc[..., 1], enc[..., 0]], axis=-1)
    _imwrite(_prepare_write(path), bgr)


# ----------------------------------------------------------------------------------------------
# Object map
# ----------------------------------------------------------------------------------------------
def read_object_map_png(path: PathLike) -> np.ndarray:
    """Reads a KITTI 2015 ``obj_map`` PNG (single channel, 0 = background, > 0 = object id) as int32 [H, W]."""
    expected = "a single-channel 8- or 16-bit PNG (KITTI object map)"
    img = _read_png(path, expected)
    if img.ndim != 2 or img.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"'{path}': expected {expected}, got {_describe(img)}")
    return img.astype(np.int32)
