"""Occlusion-aware ternary census loss (multi-mono-sf's photometric term, spec §3).

Each pixel is described by the soft signs of its 7x7 neighbours' grey-level differences,
t / sqrt(0.81 + t^2) on a 0..255 grey scale (replicate padding at the borders). Two images are
compared per pixel by the soft Hamming distance of their descriptors, (dt)^2 / (0.1 + (dt)^2)
averaged over the neighbours that are valid in the mask, then penalised robustly,
(|d| + 0.01)^0.4, and averaged over the valid pixels of the mask with a 3-pixel border removed.

Differences of grey levels make the descriptor, and so the loss, invariant to an additive change
of brightness; the soft sign makes it nearly invariant to a contrast change.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F

from .masked import masked_mean

__all__ = ["census_transform", "census_distance", "census_loss", "zero_border",
           "CENSUS_KERNEL", "CENSUS_EPS", "CENSUS_Q"]

CENSUS_KERNEL = 7
CENSUS_SOFTSIGN = 0.81      # t / sqrt(0.81 + t^2): 0.9^2, on grey levels in 0..255
CENSUS_HAMMING = 0.1        # d^2 / (0.1 + d^2)
CENSUS_EPS, CENSUS_Q = 0.01, 0.4   # robust penalty (|d| + eps)^q


def _flatten(x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, ...]]:
    """[..., C, H, W] -> ([M, C, H, W], leading shape)."""
    return x.reshape(-1, *x.shape[-3:]), tuple(x.shape[:-3])


def _neighbours(x: torch.Tensor, kernel: int) -> torch.Tensor:
    """x [M, 1, H, W] -> [M, kernel^2, H, W]: the kernel x kernel neighbours of every pixel
    (replicate padding), neighbour index = row-major offset in the window."""
    pad = kernel // 2
    h, w = x.shape[-2:]
    patches = F.unfold(F.pad(x, (pad, pad, pad, pad), mode="replicate"), kernel)
    return patches.view(x.shape[0], kernel * kernel, h, w)


def census_transform(image: torch.Tensor, kernel: int = CENSUS_KERNEL) -> torch.Tensor:
    """Soft ternary census descriptor: image [M, C, H, W] in [0, 1] -> [M, kernel^2, H, W]."""
    grey = image.mean(dim=1, keepdim=True) * 255.0
    diff = _neighbours(grey, kernel) - grey
    return diff / torch.sqrt(CENSUS_SOFTSIGN + diff * diff)


def zero_border(mask: torch.Tensor, width: int) -> torch.Tensor:
    """A copy of mask [..., H, W] with ``width`` pixels zeroed along each edge."""
    if width <= 0:
        return mask
    out = torch.zeros_like(mask)
    out[..., width:-width, width:-width] = mask[..., width:-width, width:-width]
    return out


def census_distance(image1: torch.Tensor, image2: torch.Tensor, mask: torch.Tensor,
                    kernel: int = CENSUS_KERNEL) -> torch.Tensor:
    """Per-pixel soft Hamming distance [M, 1, H, W] of the census descriptors, averaged over the
    neighbours valid in mask [M, 1, H, W] (an all-invalid neighbourhood gives 0)."""
    dist = (census_transform(image1, kernel) - census_transform(image2, kernel)) ** 2
    dist = dist / (CENSUS_HAMMING + dist)
    valid = _neighbours(mask.to(dist.dtype), kernel)
    return (dist * valid).sum(dim=1, keepdim=True) / (valid.sum(dim=1, keepdim=True) + 1e-8)


def census_loss(image1: torch.Tensor, image2: torch.Tensor, mask: torch.Tensor, kernel: int = CENSUS_KERNEL,
                subtract_floor: bool = True) -> torch.Tensor:
    """Occlusion-aware census loss between two images (module docstring), a scalar.

    Args:
        image1: [..., C, H, W] the reference image (e.g. the target view), values in [0, 1].
        image2: [..., C, H, W] the image compared with it (e.g. a warped source view).
        mask: [..., 1, H, W] 1 where image1's pixel is visible in image2 (bool or float). Not
            modified (the reference zeroes its border in place).
        kernel: census window.
        subtract_floor: report (|d| + 0.01)^0.4 - 0.01^0.4, so that identical images cost exactly
            0. The reference does not subtract it; the gradient is the same either way, only the
            value (which enters multi-mono-sf's loss balancing) differs by 0.01^0.4 ~= 0.158 per
            term. False reproduces the reference's value.
    Returns:
        scalar: the masked mean over the valid pixels (0 when there are none).
    """
    image1, lead = _flatten(image1)
    image2, _ = _flatten(image2)
    mask = mask.expand(*lead, 1, *mask.shape[-2:]).reshape(-1, 1, *mask.shape[-2:]).to(image1.dtype)
    dist = census_distance(image1, image2, mask, kernel)
    penalty = (dist.abs() + CENSUS_EPS) ** CENSUS_Q
    if subtract_floor:
        penalty = penalty - CENSUS_EPS ** CENSUS_Q
    return masked_mean(penalty, zero_border(mask, kernel // 2))
