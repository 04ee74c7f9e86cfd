"""A small PLY writer for coloured point clouds (the per-frame clouds of the scene flow evaluation).

    write_ply("cloud.ply", points, colors)               # binary little-endian (default)
    write_ply("cloud.ply", points, colors, binary=False)  # ASCII, e.g. for a quick look in a text editor

Layout (readable by MeshLab, CloudCompare, Open3D, Blender): one ``vertex`` element with
``float x, y, z`` (float32) and, when colours are given, ``uchar red, green, blue``. Points in the
caller's frame and unit (here: the camera frame, OpenCV axes, metres). The file is written
atomically (utils/atomic.py), so a viewer never opens a half-written cloud.
"""

import io
from typing import Sequence

import numpy as np

from utils.atomic import atomic_open

__all__ = ["write_ply", "PLY_DTYPE_XYZ", "PLY_DTYPE_XYZRGB"]

PLY_DTYPE_XYZ = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4")])
PLY_DTYPE_XYZRGB = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                             ("red", "u1"), ("green", "u1"), ("blue", "u1")])


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):             # a torch tensor, without importing torch here
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def write_ply(path, points, colors=None, binary: bool = True, comments: Sequence[str] = ()) -> int:
    """Write `points` [N, 3] (float) with optional `colors` [N, 3] (uint8 0..255, or float in
    [0, 1], which are scaled and rounded) to `path`; returns N. Non-finite points are an error
    (drop them before calling: a viewer would choke on NaN)."""
    pts = _to_numpy(points)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"write_ply({path}): points must be [N, 3], got shape {pts.shape}")
    if not np.isfinite(pts).all():
        raise ValueError(f"write_ply({path}): {int((~np.isfinite(pts)).any(1).sum())} points are not finite")
    n = pts.shape[0]
    rgb = None
    if colors is not None:
        rgb = _to_numpy(colors)
        if rgb.shape != (n, 3):
            raise ValueError(f"write_ply({path}): colors must be [N, 3] = {(n, 3)} like the points, got {rgb.shape}")
        if rgb.dtype != np.uint8:
            # Floats are taken as [0, 1] (the data contract's images); anything else must already be 0..255.
            scale = 255.0 if np.issubdtype(rgb.dtype, np.floating) else 1.0
            rgb = np.clip(np.rint(rgb.astype(np.float64) * scale), 0, 255).astype(np.uint8)
    header = ["ply", f"format {'binary_little_endian' if binary else 'ascii'} 1.0"]
    header += [f"comment {c}" for c in comments]
    header += [f"element vertex {n}", "property float x", "property float y", "property float z"]
    if rgb is not None:
        header += ["property uchar red", "property uchar green", "property uchar blue"]
    header.append("end_header")
    head = ("\n".join(header) + "\n").encode("ascii")

    if binary:
        table = np.empty(n, PLY_DTYPE_XYZRGB if rgb is not None else PLY_DTYPE_XYZ)
        table["x"], table["y"], table["z"] = pts[:, 0], pts[:, 1], pts[:, 2]
        if rgb is not None:
            table["red"], table["green"], table["blue"] = rgb[:, 0], rgb[:, 1], rgb[:, 2]
        body = table.tobytes()
    else:
        # float32 values printed with 9 significant digits read back bit-exactly.
        values = [pts.astype(np.float32).astype(np.float64)] + ([rgb.astype(np.float64)] if rgb is not None else [])
        fmt = ["%.9g"] * 3 + (["%d"] * 3 if rgb is not None else [])
        buffer = io.BytesIO()
        np.savetxt(buffer, np.concatenate(values, axis=1), fmt=fmt, delimiter=" ")
        body = buffer.getvalue()
    with atomic_open(path, "wb") as f:
        f.write(head)
        f.write(body)
    return n
