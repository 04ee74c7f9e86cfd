"""Loss terms of multi-frame monocular scene flow (spec/multi-mono-sf.md §3).

Building blocks, each on maps [M, C, H, W] (M = anything folded into a batch: items, frames):

* :func:`disocclusion_mask`: where something lands when every pixel is pushed along a flow (or a
  disparity); the rest is disoccluded (not visible in the other view).
* :func:`stereo_warp`: the right image seen from the left camera with the left disparity.
* :func:`disparity_term`: census between the left image and the warped right one on the pixels
  the right camera sees, plus the second-order edge-aware smoothness of the disparity.
* :func:`scene_flow_terms`: for a pair of frames (src, tgt) with the forward scene flow of src and
  the backward one of tgt: the census of each image against the other warped through 3D, the 3D
  point reconstruction error relative to the distance, and the 3D smoothness of both flows.
* :func:`balance`: multi-mono-sf's rescaling of loss terms to one magnitude.
* :func:`supervised_terms`: the fine-tuning losses against KITTI 2015 ground truth.

Disparities here are in pixels of the map they belong to; depth = fx * baseline / (disp + 1e-4),
clamped to [1e-3, 80] m; K is for the map's size; baselines are per item ([M]).
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from geometry import backproject, disparity_to_depth, forward_splat, invert_intrinsics, pixel_grid, project, sample_at_pixels

from .census import CENSUS_KERNEL, census_loss, zero_border
from .masked import masked_mean
from .smoothness import second_order_edge_aware_smoothness

__all__ = ["disocclusion_mask", "stereo_warp", "disparity_term", "scene_flow_terms", "balance", "supervised_terms",
           "points_from_disparity", "robust_epe", "DISOCC_THRESHOLD", "SAMPLE_VALID_THRESHOLD"]

DISOCC_THRESHOLD = 0.499        # a pixel is visible when this much splatted mass lands on it
DISOCC_MIN_VISIBLE = 0.5        # fewer visible pixels than this fraction: trust everything (early training)
SAMPLE_VALID_THRESHOLD = 0.999  # a warped sample counts when its bilinear weights stay inside the image
DISPARITY_EPS, MIN_DEPTH, MAX_DEPTH = 1e-4, 1e-3, 80.0
POINT_NORM_EPS = 1e-8
ROBUST_EPE_EPS, ROBUST_EPE_Q = 0.01, 0.4


def _item(value: torch.Tensor) -> torch.Tensor:
    return value.reshape(-1, 1, 1, 1)


def disocclusion_mask(flow: torch.Tensor) -> torch.Tensor:
    """Visibility [M, 1, H, W] (float 0/1, no gradient) of the pixels of the frame a flow points to.

    Args:
        flow: [M, 2, H, W] optical flow in pixels, or [M, 1, H, W] a disparity in pixels, read as
            the flow (d, 0) (a right-view disparity then gives the left view's visibility).
    Each sample whose visible fraction is below one half gets all ones instead: in early training
    the flows are noise and the mask would only hide the image (the reference checks the whole
    batch at once; here each sample on its own).
    """
    flow = flow.detach()
    if flow.shape[1] == 1:
        flow = torch.cat([flow, torch.zeros_like(flow)], dim=1)
    ones = torch.ones_like(flow[:, :1])
    visible = (forward_splat(ones, flow) > DISOCC_THRESHOLD).to(flow.dtype)
    enough = visible.mean(dim=(1, 2, 3), keepdim=True) >= DISOCC_MIN_VISIBLE
    return torch.where(enough, visible, ones)


def _sample(source: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """Bilinear sample of source at pixels, zeroed where the sample reaches outside the image."""
    sampled = sample_at_pixels(source, pixels)
    ones = torch.ones_like(source[:, :1])
    valid = (sample_at_pixels(ones, pixels.detach()) >= SAMPLE_VALID_THRESHOLD).to(source.dtype)
    return sampled * valid


def stereo_warp(right: torch.Tensor, disp_left: torch.Tensor) -> torch.Tensor:
    """The right image [M, C, H, W] seen from the left camera: right sampled at (u - d, v) with the
    left disparity [M, 1, H, W] in pixels (zeros outside, no validity mask: the reference's)."""
    h, w = right.shape[-2:]
    grid = pixel_grid(h, w, device=right.device, dtype=right.dtype)[:2]
    pixels = grid - torch.cat([disp_left, torch.zeros_like(disp_left)], dim=1)
    return sample_at_pixels(right, pixels)


def points_from_disparity(disp: torch.Tensor, K: torch.Tensor, baseline: torch.Tensor) -> torch.Tensor:
    """3D points [M, 3, H, W] (camera frame) of a disparity [M, 1, H, W] in pixels with K [M, 3, 3]."""
    depth = disparity_to_depth(disp, _item(K[:, 0, 0]), _item(baseline), eps=DISPARITY_EPS,
                               min_depth=MIN_DEPTH, max_depth=MAX_DEPTH)
    return backproject(depth, invert_intrinsics(K))


def disparity_term(left: torch.Tensor, right: torch.Tensor, disp_left: torch.Tensor, disp_right: torch.Tensor,
                   disp_norm: torch.Tensor, edge_weight: float,
                   census_floor: bool = False) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stereo term of one scale (without the 1/2^scale of the smoothness: the caller's).

    Args:
        left, right: [M, 3, H, W] images of the stereo pair.
        disp_left, disp_right: [M, 1, H, W] disparities in pixels of the left and right views.
        disp_norm: [M, 1, H, W] the width-normalised left disparity the smoothness acts on.
        edge_weight: beta of the smoothness's edge weights (150).
        census_floor: subtract the census floor (see census_loss); False = reference value.
    Returns:
        (census, smoothness) scalars, unweighted, and the left view's stereo visibility
        [M, 1, H, W] from the right disparity (the scene flow term uses it too).
    """
    visible = disocclusion_mask(disp_right)
    census = census_loss(left, stereo_warp(right, disp_left), visible, subtract_floor=census_floor)
    smooth = second_order_edge_aware_smoothness(disp_norm, left, edge_weight=edge_weight)
    return census, smooth, visible


def scene_flow_terms(sf_f: torch.Tensor, sf_b: torch.Tensor, disp_src: torch.Tensor, disp_tgt: torch.Tensor,
                     visible_src: torch.Tensor, visible_tgt: torch.Tensor, K: torch.Tensor, baseline: torch.Tensor,
                     image_src: torch.Tensor, image_tgt: torch.Tensor, edge_weight: float,
                     census_floor: bool = False) -> Dict[str, torch.Tensor]:
    """Scene flow terms of one scale for pairs of consecutive frames (src, tgt = src + 1).

    Args:
        sf_f: [M, 3, H, W] scene flow src -> tgt at src's pixels (metres); sf_b: tgt -> src at tgt's.
        disp_src, disp_tgt: [M, 1, H, W] disparities in pixels (detach them to keep the scene flow
            loss from moving the depth).
        visible_src, visible_tgt: [M, 1, H, W] stereo visibility of each frame (disparity term).
        K: [M, 3, 3] intrinsics at (H, W); baseline: [M] metres.
        image_src, image_tgt: [M, 3, H, W].
    Returns:
        {"image": census both ways, "points": relative 3D point error both ways,
         "smooth": 3D smoothness of both flows (without the 1/2^scale)}, scalars.
    """
    h, w = image_src.shape[-2:]
    points_src = points_from_disparity(disp_src, K, baseline)
    points_tgt = points_from_disparity(disp_tgt, K, baseline)
    moved_src = points_src + sf_f
    moved_tgt = points_tgt + sf_b
    pixels_f, _ = project(moved_src, K)     # where src's pixels land in tgt
    pixels_b, _ = project(moved_tgt, K)
    grid = pixel_grid(h, w, device=sf_f.device, dtype=sf_f.dtype)[:2]
    # A pixel of src is visible in tgt when tgt's backward flow reaches it, and in the right view.
    occ_src = disocclusion_mask(pixels_b - grid) * visible_src
    occ_tgt = disocclusion_mask(pixels_f - grid) * visible_tgt

    image = (census_loss(image_src, _sample(image_tgt, pixels_f), occ_src, subtract_floor=census_floor)
             + census_loss(image_tgt, _sample(image_src, pixels_b), occ_tgt, subtract_floor=census_floor))

    norm_src = points_src.norm(dim=1, keepdim=True)
    norm_tgt = points_tgt.norm(dim=1, keepdim=True)
    error_src = (moved_src - _sample(points_tgt, pixels_f)).norm(dim=1, keepdim=True) / (norm_src + POINT_NORM_EPS)
    error_tgt = (moved_tgt - _sample(points_src, pixels_b)).norm(dim=1, keepdim=True) / (norm_tgt + POINT_NORM_EPS)
    # The reference's census zeroes its mask's border in place, so its point loss runs on the
    # border-less mask too; kept, as the outermost pixels are the least reliable warps anyway.
    border = CENSUS_KERNEL // 2
    points = (masked_mean(error_src, zero_border(occ_src, border))
              + masked_mean(error_tgt, zero_border(occ_tgt, border)))

    smooth = (second_order_edge_aware_smoothness(sf_f, image_src, edge_weight=edge_weight, point_norm=norm_src)
              + second_order_edge_aware_smoothness(sf_b, image_tgt, edge_weight=edge_weight, point_norm=norm_tgt))
    return {"image": image, "points": points, "smooth": smooth}


def balance(terms: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, ...]:
    """multi-mono-sf's balancing: each term times max(terms) / term, the ratios detached, so every
    term has the magnitude of the largest while its gradient keeps its own direction."""
    values = torch.stack([t.detach() for t in terms])
    top = values.max()
    return tuple(t * (top / v.clamp(min=torch.finfo(v.dtype).tiny)) for t, v in zip(terms, values))


def robust_epe(flow: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(|flow - target|_2 + 0.01)^0.4 per pixel: [M, 2, H, W] -> [M, 1, H, W]."""
    return ((flow - target).norm(dim=1, keepdim=True) + ROBUST_EPE_EPS) ** ROBUST_EPE_Q


def _resize(x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Bilinear, align_corners=True (the network's and the reference's upsampling), values kept."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)


def _valid_mean(error: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean of error over the valid pixels (reference: error[valid].mean())."""
    return (error * valid).sum() / valid.sum().clamp(min=1.0)


def supervised_terms(disp_norm: torch.Tensor, sf_f: torch.Tensor, K_gt: torch.Tensor, baseline: torch.Tensor,
                     gt_disp0: torch.Tensor, gt_disp1: torch.Tensor, gt_flow: torch.Tensor,
                     gt_flow_valid: torch.Tensor) -> Optional[Dict[str, torch.Tensor]]:
    """KITTI 2015 supervised terms of one output scale (spec §3, fine-tuning).

    Args:
        disp_norm: [B, 1, h, w] width-normalised disparity of frame 10 (post-processed).
        sf_f: [B, 3, h, w] scene flow 10 -> 11.
        K_gt: [B, 3, 3] intrinsics at the ground truth's resolution; baseline [B] metres.
        gt_disp0, gt_disp1: [B, 1, Hg, Wg] disp_occ_0 / disp_occ_1 in pixels (0 = invalid).
        gt_flow: [B, 2, Hg, Wg]; gt_flow_valid: [B, 1, Hg, Wg].
    Returns:
        {"d1": L1 of the disparity, "flow": robust EPE of the induced optical flow, "d2": L1 of
        the disparity at frame 11, fx * b / (depth + sf_z)}, each averaged over its valid pixels;
        None when no pixel of any of the three is valid (e.g. KITTI raw samples with zero GT).
    """
    valid0 = (gt_disp0 > 0).to(disp_norm.dtype)
    valid1 = (gt_disp1 > 0).to(disp_norm.dtype)
    valid_flow = (gt_flow_valid > 0.5).to(disp_norm.dtype)
    if float(valid0.sum()) == 0 and float(valid1.sum()) == 0 and float(valid_flow.sum()) == 0:
        return None
    hg, wg = gt_disp0.shape[-2:]
    disp = _resize(disp_norm, (hg, wg)) * wg
    sf = _resize(sf_f, (hg, wg))
    depth = disparity_to_depth(disp, _item(K_gt[:, 0, 0]), _item(baseline), eps=DISPARITY_EPS,
                               min_depth=MIN_DEPTH, max_depth=MAX_DEPTH)
    points = backproject(depth, invert_intrinsics(K_gt))
    pixels, _ = project(points + sf, K_gt)
    flow = pixels - pixel_grid(hg, wg, device=disp.device, dtype=disp.dtype)[:2]
    # Unclamped as the reference's depth2disp; only kept off zero so no inf reaches the mean.
    depth_next = (depth + sf[:, 2:3]).clamp(min=MIN_DEPTH)
    disp_next = _item(K_gt[:, 0, 0]) * _item(baseline) / depth_next
    return {
        "d1": _valid_mean((disp - gt_disp0).abs(), valid0),
        "flow": _valid_mean(robust_epe(flow, gt_flow), valid_flow),
        "d2": _valid_mean((disp_next - gt_disp1).abs(), valid1),
    }
