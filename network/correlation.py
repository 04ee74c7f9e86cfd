"""Local correlation (cost volume) between two feature maps, in pure PyTorch.

For every pixel (y, x) of ``f1`` and every displacement (dy, dx) in [-r, r]^2::

    cost[b, (dy + r)(2r + 1) + (dx + r), y, x] = mean_c f1[b, c, y, x] * f2[b, c, y + dy, x + dx]

with zeros outside ``f2`` (kernel 1, stride 1: the layout of multi-mono-sf's ``compute_cost_volume``
and of the FlowNet CUDA correlation it can replace).

:func:`correlation` is the implementation the networks use. It turns the 81 (for r = 4) channel
reductions into a handful of batched matrix products: both maps are laid out channels last and cut
into tiles of ``TILE`` pixels along a row; for one vertical displacement dy, the product of a tile
of ``f1`` (TILE x C) with the window of ``f2`` that covers every horizontal displacement
((TILE + 2r) x C) holds all TILE x (2r + 1) wanted dot products on a band of its diagonals. One
``bmm`` per dy does every tile of every row and every batch item at once, so the Python work is
2r + 1 calls whatever the image size. The band costs (TILE + 2r) / (2r + 1) times the minimal
multiply-adds, but a matrix product runs them far faster than elementwise products and channel
means do, and no [C, 81, H, W] intermediate is ever written (tools/benchmark.py --correlation
measures both against the loop).

:func:`correlation_loop` is the straightforward loop over the (2r + 1)^2 displacements, kept as
the reference for tests and the benchmark.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["correlation", "correlation_loop", "TILE"]

# Pixels per row tile. 16 balances the wasted band products ((16 + 8) / 9 for r = 4) against the
# efficiency of larger matrix products (measured on the CPU at the four decoder levels of 256x832).
TILE = 16


def _check(f1: torch.Tensor, f2: torch.Tensor, search_range: int) -> None:
    if f1.dim() != 4 or f1.shape != f2.shape:
        raise ValueError(f"correlation expects two feature maps [B, C, H, W] of one shape, got "
                         f"{tuple(f1.shape)} and {tuple(f2.shape)}")
    if int(search_range) != search_range or search_range < 0:
        raise ValueError(f"correlation: search_range must be a non-negative integer, got {search_range!r}")


def correlation_loop(f1: torch.Tensor, f2: torch.Tensor, search_range: int) -> torch.Tensor:
    """The reference: one channel mean per displacement. [B, C, H, W] x2 -> [B, (2r+1)^2, H, W]."""
    _check(f1, f2, search_range)
    r = int(search_range)
    h, w = f1.shape[-2:]
    padded = F.pad(f2, (r, r, r, r))
    costs = [(f1 * padded[:, :, dy:dy + h, dx:dx + w]).mean(dim=1, keepdim=True)
             for dy in range(2 * r + 1) for dx in range(2 * r + 1)]
    return torch.cat(costs, dim=1)


def correlation(f1: torch.Tensor, f2: torch.Tensor, search_range: int, tile: int = TILE) -> torch.Tensor:
    """Cost volume of f1 against f2 within +-search_range pixels (module docstring).

    Args:
        f1, f2: [B, C, H, W] feature maps (f2 is the one displaced).
        search_range: r; the output has (2r + 1)^2 channels, channel (dy + r)(2r + 1) + (dx + r).
        tile: pixels per row tile of the batched formulation.
    Returns:
        [B, (2r + 1)^2, H, W], differentiable w.r.t. both maps.
    """
    _check(f1, f2, search_range)
    r, t = int(search_range), int(tile)
    b, c, h, w = f1.shape
    k = 2 * r + 1
    tiles_per_row = -(-(w + 2 * r) // t)
    row = tiles_per_row * t            # padded row length: every row is a whole number of tiles
    rows = h + 2 * r + 1               # r above, r below, and one zero row so that the last
    #                                    window of the last row stays inside the buffer
    # Channels last, flattened: tile q starts at element q * t * c, and the same tile one row
    # further down is tiles_per_row tiles later, so a vertical displacement is a plain offset.
    f2_flat = F.pad(f2, (r, row - w - r, r, r + 1)).permute(0, 2, 3, 1).reshape(-1)
    f1_flat = F.pad(f1, (0, row - w, 0, rows - h)).permute(0, 2, 3, 1).reshape(-1)
    total = b * rows * tiles_per_row
    # Tiles whose windows start below the last valid row of the padded f2 are never output rows;
    # dropping them keeps every window inside the buffer for every dy.
    count = total - (2 * r + 1) * tiles_per_row
    f1_tiles = f1_flat[:count * t * c].view(count, t, c)
    band_shape, band_strides = (count, t, k), (t * (t + 2 * r), t + 2 * r + 1, 1)
    bands = []
    for dy in range(k):
        start = dy * tiles_per_row * t * c
        # Overlapping windows (t + 2r pixels, stride t pixels) as a view: no copy.
        windows = f2_flat[start:].unfold(0, (t + 2 * r) * c, t * c)[:count].view(count, t + 2 * r, c)
        products = torch.bmm(f1_tiles, windows.transpose(1, 2))  # [count, t, t + 2r]
        # Pixel j of a tile at displacement dx is entry (j, j + dx): the band of k diagonals.
        bands.append(products.as_strided(band_shape, band_strides))
    cost = torch.stack(bands, dim=1)                              # [count, dy, t, dx]
    cost = F.pad(cost, (0, 0, 0, 0, 0, 0, 0, total - count))
    cost = cost.view(b, rows, tiles_per_row, k, t, k)[:, :h]      # [B, H, tiles, dy, t, dx]
    cost = cost.permute(0, 3, 5, 1, 2, 4).reshape(b, k * k, h, row)[..., :w]
    return cost / c
