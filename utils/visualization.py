"""Pictures for people: depth colourised by inverse depth, sparse depth drawn as dots, image grids.

Self-contained (numpy, OpenCV and matplotlib's colormap tables; nothing else of this project).
Images in and out are uint8 RGB [H, W, 3]. Depth is metres with 0 (or a non-finite value) meaning
"no measurement"; it may be a numpy array or a torch tensor ([H, W], or [1, H, W]).
"""

from functools import lru_cache
from typing import Optional, Sequence

import cv2
import numpy as np

TILE_GAP = 2          # pixels of black between the tiles of tile_images
LABEL_SCALE = 0.4     # cv2.putText font scale of the tile labels


def to_numpy(x) -> np.ndarray:
    """A numpy array from a numpy array, a torch tensor (any device) or a nested list."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def to_uint8_rgb(image) -> np.ndarray:
    """uint8 RGB [H, W, 3] from a float image in [0, 1] (channels first [3, H, W] as in the data
    contract, or channels last [H, W, 3]) or from a uint8 image (returned as is, made HWC)."""
    image = to_numpy(image)
    if image.ndim != 3:
        raise ValueError(f"expected an image with 3 dimensions, got shape {image.shape}")
    if image.shape[0] == 3 and image.shape[-1] != 3:
        image = image.transpose(1, 2, 0)
    if image.dtype == np.uint8:
        return np.ascontiguousarray(image)
    return np.ascontiguousarray(np.clip(image.astype(np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8))


@lru_cache(maxsize=16)
def colormap_lut(cmap: str = "turbo") -> np.ndarray:
    """uint8 [256, 3] RGB table of a matplotlib colormap (index 0 = low end, 255 = high end)."""
    from matplotlib import colormaps  # imported on use: slow to import, and only pictures need it
    try:
        table = colormaps[cmap](np.linspace(0.0, 1.0, 256))[:, :3]
    except KeyError:
        raise ValueError(f"unknown colormap {cmap!r}; e.g. turbo, plasma, magma, viridis") from None
    return np.round(table * 255.0).astype(np.uint8)


def _depth_2d(depth) -> np.ndarray:
    depth = to_numpy(depth).astype(np.float32, copy=False)
    if depth.ndim == 3 and depth.shape[0] == 1:
        depth = depth[0]
    if depth.ndim != 2:
        raise ValueError(f"expected depth [H, W] (or [1, H, W]), got shape {depth.shape}")
    return depth


def _valid_mask(depth: np.ndarray, valid) -> np.ndarray:
    finite = np.isfinite(depth) & (depth > 0)
    if valid is None:
        return finite
    valid = to_numpy(valid)
    if valid.ndim == 3 and valid.shape[0] == 1:
        valid = valid[0]
    if valid.shape != depth.shape:
        raise ValueError(f"valid has shape {valid.shape}, depth {depth.shape}")
    return finite & (valid > 0)


def depth_range(depth, valid=None):
    """(min, max) of the valid depth, or None when nothing is valid."""
    depth = _depth_2d(depth)
    values = depth[_valid_mask(depth, valid)]
    return (float(values.min()), float(values.max())) if values.size else None


def colorize_depth(depth, valid=None, min_depth: Optional[float] = None, max_depth: Optional[float] = None,
                   cmap: str = "turbo") -> np.ndarray:
    """uint8 RGB [H, W, 3] picture of `depth`, coloured by inverse depth so that near is the high
    (warm) end of `cmap` and far the low end; invalid pixels (depth <= 0, non-finite, or
    `valid` == 0) are black. The range defaults to the min/max of the valid depth; depths outside
    [min_depth, max_depth] are clipped to the ends."""
    depth = _depth_2d(depth)
    ok = _valid_mask(depth, valid)
    out = np.zeros(depth.shape + (3,), np.uint8)
    if not ok.any():
        return out
    values = depth[ok]
    lo = float(values.min()) if min_depth is None else float(min_depth)
    hi = float(values.max()) if max_depth is None else float(max_depth)
    lo = max(lo, 1e-6)
    hi = max(hi, lo)
    inv_near, inv_far = 1.0 / lo, 1.0 / hi
    span = inv_near - inv_far
    if span <= 0:
        t = np.ones_like(values)                           # one depth only: draw it as "near"
    else:
        t = np.clip((1.0 / values - inv_far) / span, 0.0, 1.0)
    out[ok] = colormap_lut(cmap)[np.round(t * 255.0).astype(np.intp)]
    return out


def _sparse_inverse_depth(depth: np.ndarray, ok: np.ndarray, out_hw) -> np.ndarray:
    """Inverse depth of the valid pixels at resolution `out_hw` (0 elsewhere). At another
    resolution the points are moved to their pixel (centres map onto centres); where several
    land on one pixel the nearest wins."""
    inv = np.zeros(out_hw, np.float32)
    if tuple(out_hw) == depth.shape:
        inv[ok] = 1.0 / depth[ok]
        return inv
    v, u = np.nonzero(ok)
    h, w = depth.shape
    out_h, out_w = out_hw
    u2 = np.clip(np.round((u + 0.5) * out_w / w - 0.5), 0, out_w - 1).astype(np.intp)
    v2 = np.clip(np.round((v + 0.5) * out_h / h - 0.5), 0, out_h - 1).astype(np.intp)
    np.maximum.at(inv, (v2, u2), 1.0 / depth[v, u])
    return inv


def draw_sparse_depth(image_rgb: np.ndarray, depth, radius: int = 1, valid=None,
                      min_depth: Optional[float] = None, max_depth: Optional[float] = None,
                      cmap: str = "turbo") -> np.ndarray:
    """Copy of `image_rgb` (uint8 [H, W, 3]) with the valid pixels of `depth` painted as dots of
    `radius` pixels, coloured as colorize_depth does. `depth` may have another resolution than the
    image (e.g. ground truth at the original size); its points are then moved to the image's
    pixels. Where dots overlap the nearer point is drawn (dilation of inverse depth)."""
    image = to_uint8_rgb(image_rgb).copy()
    depth = _depth_2d(depth)
    ok = _valid_mask(depth, valid)
    if not ok.any():
        return image
    values = depth[ok]
    lo = float(values.min()) if min_depth is None else float(min_depth)
    hi = float(values.max()) if max_depth is None else float(max_depth)
    inv = _sparse_inverse_depth(depth, ok, image.shape[:2])
    if radius > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        inv = cv2.dilate(inv, kernel)
    painted = inv > 0
    dense = np.zeros_like(inv)
    dense[painted] = 1.0 / inv[painted]
    colours = colorize_depth(dense, min_depth=lo, max_depth=hi, cmap=cmap)
    image[painted] = colours[painted]
    return image


def shade_mask(image_rgb: np.ndarray, mask, colour=(255, 0, 255), alpha: float = 0.5) -> np.ndarray:
    """Copy of `image_rgb` with the pixels where `mask` is 0 (e.g. the ego vehicle) blended with
    `colour`. `mask` [H, W] or [1, H, W] at the image resolution, 1 = keep."""
    image = to_uint8_rgb(image_rgb).copy()
    mask = to_numpy(mask)
    if mask.ndim == 3 and mask.shape[0] == 1:
        mask = mask[0]
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask has shape {mask.shape}, the image {image.shape[:2]}")
    hidden = mask <= 0.5
    blended = (1.0 - alpha) * image[hidden].astype(np.float32) + alpha * np.asarray(colour, np.float32)
    image[hidden] = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
    return image


def put_label(image_rgb: np.ndarray, text: str, scale: float = LABEL_SCALE) -> np.ndarray:
    """Write `text` in the top-left corner (white on a black outline, readable on any image)."""
    image = np.ascontiguousarray(image_rgb)
    org = (3, 3 + int(round(22 * scale)))
    cv2.putText(image, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(image, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return image


def grid_tile_size(tile_hw, columns: int, max_width: int = 1600, gap: int = TILE_GAP):
    """(height, width) each tile of tile_images gets: the first tile's size, scaled down (never
    up) so that `columns` tiles and their gaps fit in `max_width`."""
    h, w = int(tile_hw[0]), int(tile_hw[1])
    room = max_width - gap * (columns - 1)
    if room < columns:
        raise ValueError(f"{columns} columns do not fit in max_width={max_width}")
    scale = min(1.0, room / float(columns * w))
    tile_w = max(1, min(w, int(np.floor(w * scale))))
    tile_h = max(1, int(round(h * tile_w / float(w))))
    return tile_h, tile_w


def tile_images(rows: Sequence[Sequence[np.ndarray]], labels: Optional[Sequence[Sequence[Optional[str]]]] = None,
                max_width: int = 1600, gap: int = TILE_GAP) -> np.ndarray:
    """One uint8 RGB picture of a grid of uint8 RGB images (`rows`, a list of rows). Every tile is
    resized to the first image's size, scaled down so the grid is at most `max_width` pixels wide
    (see grid_tile_size); tiles are separated by `gap` black pixels and short rows are padded with
    black. `labels` (same layout, None or "" to skip) are written in the tiles' top-left corners."""
    rows = [list(r) for r in rows]
    if not rows or not any(rows):
        raise ValueError("tile_images needs at least one image")
    columns = max(len(r) for r in rows)
    first = next(img for r in rows for img in r)
    tile_h, tile_w = grid_tile_size(first.shape[:2], columns, max_width, gap)
    height = len(rows) * tile_h + (len(rows) - 1) * gap
    width = columns * tile_w + (columns - 1) * gap
    canvas = np.zeros((height, width, 3), np.uint8)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            tile = to_uint8_rgb(img)
            if tile.shape[:2] != (tile_h, tile_w):
                shrinking = tile.shape[0] > tile_h or tile.shape[1] > tile_w
                tile = cv2.resize(tile, (tile_w, tile_h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
            label = labels[i][j] if labels is not None and i < len(labels) and j < len(labels[i]) else None
            if label:
                tile = put_label(tile.copy(), str(label))
            y, x = i * (tile_h + gap), j * (tile_w + gap)
            canvas[y:y + tile_h, x:x + tile_w] = tile
    return canvas
