"""Intensity alignment of a warped view to the target view (VFDepth, §3.5 of spec/vfdepth.md).

Neighbouring cameras differ in exposure and white balance; before the photometric error, each
warped image is shifted and scaled so that its mean and standard deviation over the region both
views see match the target's.
"""
from __future__ import annotations

from typing import Tuple

import torch


def _region_mean_std(
    x: torch.Tensor, region: torch.Tensor, count: torch.Tensor, eps: float, reference_variance: bool
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Mean and std [M, 1, 1, 1] of x [M, C, H, W] over the region weights [M, C, H, W]."""
    mean = (x * region).sum(dim=(1, 2, 3), keepdim=True) / (count + eps)
    squared = (x - mean) ** 2
    if reference_variance:
        # VFDepth: the squared deviations of ALL pixels (outside the region too) over C*H*W.
        variance = squared.sum(dim=(1, 2, 3), keepdim=True) / squared[0].numel()
    else:
        variance = (squared * region).sum(dim=(1, 2, 3), keepdim=True) / (count + eps)
    return mean, torch.sqrt(variance)


def align_intensity(
    warped: torch.Tensor,
    target: torch.Tensor,
    region_mask: torch.Tensor,
    warped_mask: torch.Tensor,
    eps: float = 1e-8,
    reference_variance: bool = False,
) -> torch.Tensor:
    """Match the warped image's statistics to the target's over their common region.

    Per item (every leading index), with statistics computed under no_grad over the region
    (one mean and one std over all channels and pixels, weighted by ``region_mask``):

        w' = (w - mu_w) / (sigma_w + eps) * sigma_t + mu_t,   then multiplied by ``warped_mask``.

    The gradient flows through ``warped`` only (statistics and masks are constants).

    Quirks of the reference, and what is done here:
    - VFDepth's variance is sum over ALL pixels of (x - mu)^2 / (C * H * W): pixels outside the
      region (zeros of the warp, the ego vehicle) inflate it, and the denominator counts them.  By
      default the variance is taken over the region, as the mean is; ``reference_variance=True``
      reproduces the reference.
    - VFDepth skips alignment for the whole batch if any item's region is empty.  Here only the
      items with an empty region are left unchanged (returned as given, not masked).
    - VFDepth binarises the region (``.bool()``); a soft region weights the statistics here (the
      same numbers for a binary region).

    Args:
        warped: [..., C, H, W] warped source image.
        target: [..., C, H, W] target image.
        region_mask: [..., 1, H, W] where the statistics are taken: target (self-occlusion) mask
            times warped mask.
        warped_mask: [..., 1, H, W] validity of the warp; the aligned image is zero outside it.
        eps: added to sigma_w (and to the region's weight sum).
        reference_variance: reproduce the reference's variance (see above).
    Returns:
        [..., C, H, W] aligned warped image.
    """
    shape = torch.broadcast_shapes(warped.shape, target.shape)
    lead, (c, h, w) = shape[:-3], shape[-3:]
    flat_warped = warped.expand(shape).reshape(-1, c, h, w)
    flat_mask = warped_mask.detach().expand(*lead, 1, h, w).reshape(-1, 1, h, w)
    with torch.no_grad():
        region = region_mask.expand(*lead, 1, h, w).reshape(-1, 1, h, w).to(warped.dtype).expand(-1, c, h, w)
        count = region.sum(dim=(1, 2, 3), keepdim=True)
        flat_target = target.expand(shape).reshape(-1, c, h, w)
        mean_t, std_t = _region_mean_std(flat_target, region, count, eps, reference_variance)
        mean_w, std_w = _region_mean_std(flat_warped.detach(), region, count, eps, reference_variance)
        nonempty = count > 0
    aligned = ((flat_warped - mean_w) / (std_w + eps) * std_t + mean_t) * flat_mask
    return torch.where(nonempty, aligned, flat_warped).reshape(shape)
