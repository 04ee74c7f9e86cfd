"""Masked averaging of per-pixel losses."""
from __future__ import annotations

import torch


def masked_mean(loss: torch.Tensor, mask: torch.Tensor, keep_dims: int = 0, eps: float = 1e-8) -> torch.Tensor:
    """sum(loss * mask) / (sum(mask) + eps) over all but the first ``keep_dims`` dims.

    The mask is used as given: soft weights are allowed and never binarised.  Loss and mask
    broadcast against each other first (e.g. loss [B, N, 3, H, W] with mask [B, N, 1, H, W]), and
    the sum of the mask runs over the broadcast shape, so that it counts every element averaged.
    An all-zero mask gives 0 (no NaN) and zero gradient.

    Args:
        loss: [..., *] per-element loss.
        mask: [..., *] weights >= 0, broadcastable with ``loss``.
        keep_dims: how many leading dims to keep: 0 gives a scalar (VFDepth's
            ``compute_masked_loss``), 1 a value per item [B], 2 per item and camera [B, N].
        eps: added to the denominator.
    Returns:
        tensor of shape loss.shape[:keep_dims] (after broadcasting).
    """
    loss, mask = torch.broadcast_tensors(loss, mask)
    if not 0 <= keep_dims <= loss.dim():
        raise ValueError(f"keep_dims must be in [0, {loss.dim()}], got {keep_dims}")
    dims = tuple(range(keep_dims, loss.dim()))
    if not dims:  # nothing to reduce: each element is its own (weighted) mean
        return loss * mask / (mask + eps)
    return (loss * mask).sum(dim=dims) / (mask.sum(dim=dims) + eps)
