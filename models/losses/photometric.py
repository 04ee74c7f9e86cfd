"""Photometric reconstruction error (SSIM + L1), minimum reprojection and the auto-mask.

All maps are channels first with arbitrary leading dims: images [..., C, H, W], per-pixel errors
[..., 1, H, W].  The leading dims are flattened internally for the 2D pooling.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F

SSIM_C1 = 0.01**2
SSIM_C2 = 0.03**2

ErrorStack = Union[torch.Tensor, Sequence[torch.Tensor]]


def _pool3x3_reflect(x: torch.Tensor) -> torch.Tensor:
    """3x3 box average of x [M, C, H, W] on a reflection-padded input -> [M, C, H, W]."""
    return F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), kernel_size=3, stride=1)


def _pool(x: torch.Tensor) -> torch.Tensor:
    """:func:`_pool3x3_reflect` of maps with any leading dims [..., C, H, W]."""
    return _pool3x3_reflect(x.reshape(-1, *x.shape[-3:])).reshape(x.shape)


def ssim_error(x: torch.Tensor, y: torch.Tensor, denominator_eps: float = 0.0) -> torch.Tensor:
    """Per-pixel SSIM dissimilarity clamp((1 - SSIM) / 2, 0, 1), channel-averaged.

    SSIM uses 3x3 average pooling of reflection-padded inputs (so borders are treated like the
    interior: a constant image has zero error everywhere), C1 = 0.01^2 and C2 = 0.03^2.

    Args:
        x, y: [..., C, H, W] images (broadcast against each other), H, W >= 2.
        denominator_eps: added to the SSIM denominator.  The VFDepth code adds 1e-8, which makes
            identical dark flat patches cost up to 0.05; the default 0 keeps SSIM(x, x) = 1 exactly
            (the denominator is already >= C1 * C2 > 0).
    Returns:
        [..., 1, H, W] in [0, 1].
    """
    # Each image's own statistics are pooled at its own shape: a target compared with several
    # warps (broadcast over frames and neighbours) is pooled once, not once per warp.
    mu_x, mu_y = _pool(x), _pool(y)
    # The same operation order for the x-x and x-y terms makes SSIM(x, x) exactly 1.
    mu_xx, mu_yy, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    sigma_x = _pool(x * x) - mu_xx
    sigma_y = _pool(y * y) - mu_yy
    sigma_xy = _pool(x * y) - mu_xy
    numerator = (2 * mu_xy + SSIM_C1) * (2 * sigma_xy + SSIM_C2)
    denominator = (mu_xx + mu_yy + SSIM_C1) * (sigma_x + sigma_y + SSIM_C2) + denominator_eps
    error = torch.clamp((1 - numerator / denominator) / 2, 0, 1)
    return error.mean(dim=-3, keepdim=True)


def l1_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Channel-averaged absolute difference: [..., C, H, W] x2 -> [..., 1, H, W]."""
    return (pred - target).abs().mean(dim=-3, keepdim=True)


def photometric_error(pred: torch.Tensor, target: torch.Tensor, ssim_weight: float = 0.85) -> torch.Tensor:
    """w * SSIM' + (1 - w) * L1 per pixel (both channel-averaged).

    Args:
        pred, target: [..., C, H, W] images in [0, 1] (broadcast).
        ssim_weight: w; 0.85 in VFDepth (and monodepth2).
    Returns:
        [..., 1, H, W].
    """
    l1 = l1_error(pred, target)
    if ssim_weight == 0:
        return l1
    return ssim_weight * ssim_error(pred, target) + (1 - ssim_weight) * l1


def _stack(errors: ErrorStack) -> torch.Tensor:
    """A list of F maps [..., 1, H, W] (or an already stacked tensor) -> [F, ..., 1, H, W]."""
    if isinstance(errors, torch.Tensor):
        return errors
    return torch.stack(list(errors), dim=0)


def min_reprojection(errors: ErrorStack) -> torch.Tensor:
    """Per-pixel minimum over the frames (monodepth2's minimum reprojection).

    Args:
        errors: [F, ..., 1, H, W], or a list of F maps [..., 1, H, W], one per source frame.
    Returns:
        [..., 1, H, W]; the gradient flows to the selected frame only.
    """
    return _stack(errors).min(dim=0).values


def automask(
    reprojection_errors: ErrorStack,
    identity_errors: ErrorStack,
    noise_std: float = 1e-5,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Auto-mask: 1 where warping explains the target better than not moving at all.

    A pixel is kept where min_f(warped error) < min_f(identity error) + noise_std * N(0, 1); the
    noise (VFDepth adds it to the minimum of the identity errors) breaks ties.  With
    ``noise_std=0`` ties are masked out, as in monodepth2 (VFDepth keeps them: its argmin puts the
    reprojection first), so that frames of a static camera do not train depth.

    Args:
        reprojection_errors: [F, ..., 1, H, W] or a list: errors of the warped source frames.
        identity_errors: [F', ..., 1, H, W] or a list: errors of the unwarped source frames.
        noise_std: standard deviation of the tie-breaking noise; 0 disables it.
        generator: makes the noise deterministic; its device must be the errors' device.
    Returns:
        float mask [..., 1, H, W] in {0, 1} (no gradient), dtype of the errors.
    """
    warped_min = min_reprojection(reprojection_errors).detach()
    identity_min = min_reprojection(identity_errors).detach()
    if noise_std > 0:
        noise = torch.randn(
            identity_min.shape, generator=generator, device=identity_min.device, dtype=identity_min.dtype
        )
        identity_min = identity_min + noise_std * noise
    return (warped_min < identity_min).to(warped_min.dtype)
