"""Forward splatting in pure PyTorch (no CUDA extension): push each source pixel along its flow.

Each source pixel (u, v) lands at (u + flow_u, v + flow_v) and its value is distributed to the
four surrounding pixel centres with bilinear weights (the weights sum to 1).  Contributions
that fall outside the image are dropped.  Target pixels receive the *sum* of what lands on them;
softmax splatting turns that into a weighted average, so that the source with the larger metric
(e.g. the nearer point) dominates where several land on one pixel.

Shapes: input [..., C, H, W], flow [..., 2, H, W] in pixels (channel 0 = u, 1 = v), output on
the same H x W grid.  Differentiable w.r.t. the input, the metric and (through the bilinear
weights) the flow.
"""
from __future__ import annotations

import torch


def _splat_indices_and_weights(flow: torch.Tensor):
    """Flat target indices [B, 4*H*W] and bilinear weights [B, 1, 4*H*W] for flow [B, 2, H, W].

    Weights of corners outside the image are 0 (their index is a harmless 0).
    """
    _, _, h, w = flow.shape
    v, u = torch.meshgrid(
        torch.arange(h, device=flow.device, dtype=flow.dtype),
        torch.arange(w, device=flow.device, dtype=flow.dtype),
        indexing="ij",
    )
    x = u + flow[:, 0]
    y = v + flow[:, 1]
    # Non-finite or huge flows would overflow the integer cast: clamp to just outside the image
    # (both corners then drop out, so the clamp changes nothing that is kept).
    finite = torch.isfinite(x) & torch.isfinite(y)
    x = torch.where(finite, x, torch.full_like(x, -2.0)).clamp(-2.0, w + 1.0)
    y = torch.where(finite, y, torch.full_like(y, -2.0)).clamp(-2.0, h + 1.0)
    x0, y0 = torch.floor(x), torch.floor(y)
    fx, fy = x - x0, y - y0  # fractional parts carry the gradient w.r.t. the flow
    indices, weights = [], []
    for dx, dy, wgt in (
        (0, 0, (1 - fx) * (1 - fy)),
        (1, 0, fx * (1 - fy)),
        (0, 1, (1 - fx) * fy),
        (1, 1, fx * fy),
    ):
        xi, yi = x0.long() + dx, y0.long() + dy
        inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
        indices.append(torch.where(inside, yi * w + xi, torch.zeros_like(xi)).flatten(1))
        weights.append((wgt * inside).flatten(1))
    return torch.cat(indices, dim=1), torch.cat(weights, dim=1)[:, None, :]


def forward_splat(input: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Summation splatting: input [..., C, H, W] moved by flow [..., 2, H, W] -> [..., C, H, W].

    Mass is conserved for everything that stays in the image; splatting a map of ones gives the
    coverage map used for disocclusion detection (0 where nothing lands).
    """
    channels, h, w = input.shape[-3:]
    batch = torch.broadcast_shapes(input.shape[:-3], flow.shape[:-3])
    values = input.expand(*batch, channels, h, w).reshape(-1, channels, h * w)
    index, weight = _splat_indices_and_weights(flow.expand(*batch, 2, h, w).reshape(-1, 2, h, w))
    contributions = values.repeat(1, 1, 4) * weight  # [B, C, 4HW], one block per corner
    out = torch.zeros_like(values)
    out = out.scatter_add(2, index[:, None, :].expand(-1, channels, -1), contributions)
    return out.reshape(*batch, channels, h, w)


def softmax_splat(input: torch.Tensor, flow: torch.Tensor, metric: torch.Tensor) -> torch.Tensor:
    """Softmax splatting: sum(exp(metric) * input) / sum(exp(metric)) over what lands on a pixel.

    Args:
        input: [..., C, H, W]; flow: [..., 2, H, W]; metric: [..., 1, H, W] (larger wins).
    Returns:
        [..., C, H, W]; exactly 0 where nothing lands.
    The metric is shifted by its per-sample maximum before exp (same result, no overflow).  We
    divide only where the splatted weight is positive instead of adding an epsilon to it, so
    pixels reached only by low-metric sources are not pulled towards 0.
    """
    shift = metric.flatten(-3).amax(dim=-1).detach()[..., None, None, None]
    weight = torch.exp(metric - shift)
    weighted = input * weight
    weight = weight.expand(*weighted.shape[:-3], *weight.shape[-3:])
    splatted = forward_splat(torch.cat((weighted, weight), dim=-3), flow)
    numerator, denominator = splatted[..., :-1, :, :], splatted[..., -1:, :, :]
    landed = denominator > torch.finfo(denominator.dtype).tiny
    safe = torch.where(landed, denominator, torch.ones_like(denominator))
    return torch.where(landed, numerator / safe, torch.zeros_like(numerator))
