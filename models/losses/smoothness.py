"""Smoothness priors on predicted disparity and scene flow.

Maps are channels first with arbitrary leading dims ([..., C, H, W]); each function returns the
mean over everything (a scalar), as the references do (all cameras of a batch share a size, so the
mean over cameras of per-camera means is the same number).
"""
from __future__ import annotations

from typing import Optional

import torch


def _diff_x(x: torch.Tensor, stride: int = 1) -> torch.Tensor:
    """x[..., :, u] - x[..., :, u + stride]: [..., C, H, W] -> [..., C, H, W - stride]."""
    return x[..., :, :-stride] - x[..., :, stride:]


def _diff_y(x: torch.Tensor, stride: int = 1) -> torch.Tensor:
    """x[..., v, :] - x[..., v + stride, :]: [..., C, H, W] -> [..., C, H - stride, W]."""
    return x[..., :-stride, :] - x[..., stride:, :]


def mean_normalise(disp: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """disp / (mean over H, W of each map + eps): [..., C, H, W] -> same shape (scale-free)."""
    return disp / (disp.mean(dim=(-2, -1), keepdim=True) + eps)


def edge_aware_smoothness(
    disp: torch.Tensor, image: torch.Tensor, normalise: bool = True, eps: float = 1e-8
) -> torch.Tensor:
    """First-order edge-aware smoothness (monodepth2 / VFDepth).

    mean(|dx d| * exp(-mean_c |dx I|)) + mean(|dy d| * exp(-mean_c |dy I|)) with forward
    differences between neighbouring pixels, on d = disp / mean(disp) per map when ``normalise``
    (which makes the term invariant to the scale of the disparity).

    Args:
        disp: [..., 1, H, W] disparity.
        image: [..., C, H, W] the target image (broadcast with disp over the leading dims).
        normalise: divide each disparity map by its mean (+ eps) first.
    Returns:
        scalar.
    """
    d = mean_normalise(disp, eps) if normalise else disp
    weight_x = torch.exp(-_diff_x(image).abs().mean(dim=-3, keepdim=True))
    weight_y = torch.exp(-_diff_y(image).abs().mean(dim=-3, keepdim=True))
    return (_diff_x(d).abs() * weight_x).mean() + (_diff_y(d).abs() * weight_y).mean()


def plain_smoothness(disp: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """mean|dx d| + mean|dy d| on the mean-normalised disparity d (VFDepth's depth-synthesis term).

    Args:
        disp: [..., 1, H, W].
    Returns:
        scalar.
    """
    d = mean_normalise(disp, eps)
    return _diff_x(d).abs().mean() + _diff_y(d).abs().mean()


def robust_l1(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """sqrt(x^2 + eps), a differentiable |x| (eps = 0.001^2 in multi-mono-sf)."""
    return torch.sqrt(x * x + eps)


def second_order_edge_aware_smoothness(
    pred: torch.Tensor,
    image: torch.Tensor,
    edge_weight: float = 150.0,
    eps: float = 1e-6,
    point_norm: Optional[torch.Tensor] = None,
    norm_eps: float = 1e-8,
) -> torch.Tensor:
    """Second-order edge-aware smoothness of multi-mono-sf (disparity and scene flow).

    With second differences p_xx(v, u) = p(u-1) - 2 p(u) + p(u+1) (and p_yy alike) at the interior
    pixels, weights from 2-pixel image differences w_x = exp(-edge_weight * mean_c |I(u+1) - I(u-1)|)
    at the same pixels, and rho(x) = sqrt(x^2 + eps):

        (mean(w_x * rho(p_xx) / n) + mean(w_y * rho(p_yy) / n)) / 2

    where n = point_norm + norm_eps at the same pixels for scene flow (the 3D point norm |P|,
    which makes the term relative to the distance), and n = 1 otherwise.  Means run over all
    elements, channels of ``pred`` included.  A linear ramp costs sqrt(eps) * mean weight, not 0.

    Args:
        pred: [..., C, H, W] disparity (C = 1) or scene flow (C = 3); H, W >= 3.
        image: [..., Ci, H, W] the image of the same view.
        edge_weight: beta of the edge weights (150 in multi-mono-sf).
        eps: the robust penalty's epsilon (squared-value units).
        point_norm: optional [..., 1, H, W] norm of the 3D points of the view.
        norm_eps: added to ``point_norm``.
    Returns:
        scalar.
    """
    weight_x = torch.exp(-edge_weight * _diff_x(image, 2).abs().mean(dim=-3, keepdim=True))  # [..., 1, H, W-2]
    weight_y = torch.exp(-edge_weight * _diff_y(image, 2).abs().mean(dim=-3, keepdim=True))  # [..., 1, H-2, W]
    pred_xx = _diff_x(_diff_x(pred))  # [..., C, H, W-2]
    pred_yy = _diff_y(_diff_y(pred))  # [..., C, H-2, W]
    term_x = weight_x * robust_l1(pred_xx, eps)
    term_y = weight_y * robust_l1(pred_yy, eps)
    if point_norm is not None:
        term_x = term_x / (point_norm[..., :, 1:-1] + norm_eps)
        term_y = term_y / (point_norm[..., 1:-1, :] + norm_eps)
    return (term_x.mean() + term_y.mean()) / 2
