"""Pictures of disparity, optical flow and scene flow (uint8 RGB [H, W, 3]), vectorised numpy.

Colour codings:

* **Disparity** (:func:`colorize_disparity`): linear in disparity from 0 to ``max_disp`` (default
  the image's maximum) through a matplotlib colormap (default ``plasma``, as multi-mono-sf):
  near (large disparity) is the bright end. Invalid pixels (non-finite, <= 0 or ``valid`` == 0)
  are black.
* **Optical flow** (:func:`flow_to_color`): the Middlebury colour wheel (Baker et al., "A Database
  and Evaluation Methodology for Optical Flow", the 55-colour wheel RY 15, YG 6, GC 4, CB 11, BM
  13, MR 6): the hue gives the direction, the saturation the magnitude relative to ``max_flow``
  (default the image's largest magnitude); zero motion is white, flow at ``max_flow`` fully
  saturated, beyond it the colour is darkened to 75 %. Invalid pixels are black.
* **Scene flow** (:func:`sceneflow_to_color`): CIE-Lab. The 3D motion (x right, y down, z forward,
  metres) is divided by ``max_sf`` (default the 99th percentile of the image's magnitudes, so one
  outlier does not wash out the picture) and clipped to the unit ball, giving (x', y', z'); then
  L* = 60 - 35 y' (upward motion is lighter), a* = 100 x' (rightward is red, leftward green),
  b* = 100 z' (motion away from the camera is yellow, towards it blue). No motion is neutral grey
  (L* = 60). Invalid pixels are black. Lab -> sRGB by OpenCV (D65).
"""

from typing import Optional

import cv2
import numpy as np

from utils.visualization import colormap_lut, to_numpy

__all__ = ["colorize_disparity", "flow_to_color", "middlebury_color_wheel", "sceneflow_to_color"]

# Lab coding of the scene flow (module docstring).
SF_LIGHTNESS, SF_LIGHTNESS_SPAN, SF_CHROMA = 60.0, 35.0, 100.0
SF_PERCENTILE = 99.0
FLOW_BEYOND_MAX_DIM = 0.75      # Middlebury: darken flow beyond the normalisation radius


def _channels_last(x, channels: int, name: str) -> np.ndarray:
    """[H, W, C] float64 from [C, H, W] or [H, W, C] (numpy or torch)."""
    a = to_numpy(x).astype(np.float64)
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 3 and a.shape[0] == channels and a.shape[-1] != channels:
        a = a.transpose(1, 2, 0)
    if a.ndim != 3 or a.shape[-1] != channels:
        raise ValueError(f"{name} must be [{channels}, H, W] or [H, W, {channels}], got shape {a.shape}")
    return a


def _mask_2d(valid, shape, name: str) -> np.ndarray:
    if valid is None:
        return np.ones(shape, bool)
    v = to_numpy(valid)
    while v.ndim > 2 and v.shape[0] == 1:
        v = v[0]
    if v.shape != tuple(shape):
        raise ValueError(f"{name}: valid mask has shape {v.shape}, expected {tuple(shape)}")
    return v > 0


def colorize_disparity(disp, valid=None, max_disp: Optional[float] = None, cmap: str = "plasma") -> np.ndarray:
    """uint8 RGB [H, W, 3] of a disparity map [H, W] (or [1, H, W]); see the module docstring."""
    d = to_numpy(disp).astype(np.float64)
    while d.ndim > 2 and d.shape[0] == 1:
        d = d[0]
    if d.ndim != 2:
        raise ValueError(f"disparity must be [H, W] (or [1, H, W]), got shape {d.shape}")
    ok = np.isfinite(d) & (d > 0) & _mask_2d(valid, d.shape, "colorize_disparity")
    out = np.zeros(d.shape + (3,), np.uint8)
    if not ok.any():
        return out
    top = float(d[ok].max()) if max_disp is None else float(max_disp)
    t = np.clip(d[ok] / max(top, 1e-12), 0.0, 1.0)
    out[ok] = colormap_lut(cmap)[np.round(t * 255.0).astype(np.intp)]
    return out


def middlebury_color_wheel() -> np.ndarray:
    """The 55 x 3 float64 colour wheel (0..255) of the Middlebury flow pictures."""
    segments = ((15, (255, 0, 0), (255, 255, 0)),      # red -> yellow
                (6, (255, 255, 0), (0, 255, 0)),       # yellow -> green
                (4, (0, 255, 0), (0, 255, 255)),       # green -> cyan
                (11, (0, 255, 255), (0, 0, 255)),      # cyan -> blue
                (13, (0, 0, 255), (255, 0, 255)),      # blue -> magenta
                (6, (255, 0, 255), (255, 0, 0)))       # magenta -> red
    rows = []
    for n, start, end in segments:
        # floor(255 * i / n) steps, as the original colour wheel code (integer ramps)
        ramp = np.floor(255.0 * np.arange(n) / n)[:, None]
        start, end = np.asarray(start, np.float64), np.asarray(end, np.float64)
        rising = (end > start)[None, :]
        falling = (end < start)[None, :]
        rows.append(np.where(rising, ramp, np.where(falling, 255.0 - ramp, start[None, :])))
    return np.concatenate(rows, axis=0)


def flow_to_color(flow, valid=None, max_flow: Optional[float] = None) -> np.ndarray:
    """uint8 RGB [H, W, 3] of an optical flow [2, H, W] or [H, W, 2] (u, v) with the Middlebury
    colour wheel (module docstring)."""
    f = _channels_last(flow, 2, "flow")
    u, v = f[..., 0], f[..., 1]
    ok = np.isfinite(u) & np.isfinite(v) & _mask_2d(valid, u.shape, "flow_to_color")
    u, v = np.where(ok, u, 0.0), np.where(ok, v, 0.0)
    radius = np.sqrt(u * u + v * v)
    top = float(radius[ok].max()) if (max_flow is None and ok.any()) else float(max_flow or 0.0)
    norm = radius / max(top, 1e-12)
    wheel = middlebury_color_wheel()
    ncols = wheel.shape[0]
    angle = np.arctan2(-v, -u) / np.pi                  # in [-1, 1]
    fk = (angle + 1.0) / 2.0 * (ncols - 1)
    k0 = np.floor(fk).astype(np.intp)
    k1 = (k0 + 1) % ncols
    frac = (fk - k0)[..., None]
    colour = ((1.0 - frac) * wheel[k0] + frac * wheel[k1]) / 255.0
    inside = (norm <= 1.0)[..., None]
    colour = np.where(inside, 1.0 - norm[..., None] * (1.0 - colour), colour * FLOW_BEYOND_MAX_DIM)
    out = np.floor(255.0 * np.clip(colour, 0.0, 1.0)).astype(np.uint8)
    out[~ok] = 0
    return out


def sceneflow_to_color(sf, valid=None, max_sf: Optional[float] = None) -> np.ndarray:
    """uint8 RGB [H, W, 3] of a scene flow [3, H, W] or [H, W, 3] (metres, camera frame) in the
    CIE-Lab coding of the module docstring."""
    s = _channels_last(sf, 3, "scene flow")
    ok = np.isfinite(s).all(-1) & _mask_2d(valid, s.shape[:2], "sceneflow_to_color")
    s = np.where(ok[..., None], s, 0.0)
    magnitude = np.linalg.norm(s, axis=-1)
    if max_sf is None:
        max_sf = float(np.percentile(magnitude[ok], SF_PERCENTILE)) if ok.any() else 1.0
    scaled = s / max(float(max_sf), 1e-12)
    # clip to the unit ball (keeps the direction of larger motions)
    scaled /= np.maximum(np.linalg.norm(scaled, axis=-1, keepdims=True), 1.0)
    lab = np.stack([SF_LIGHTNESS - SF_LIGHTNESS_SPAN * scaled[..., 1],
                    SF_CHROMA * scaled[..., 0],
                    SF_CHROMA * scaled[..., 2]], axis=-1).astype(np.float32)
    rgb = cv2.cvtColor(lab, cv2.COLOR_Lab2RGB)          # float32 Lab (L 0..100) -> RGB in [0, 1]
    out = np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)
    out[~ok] = 0
    return out
