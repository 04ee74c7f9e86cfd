"""Novel-view depth synthesis of VFDepth (``training.aug_depth``; spec/vfdepth.md §3.6 and §4).

The fused voxel volume can be projected into *any* camera, not only the real ones.  During training
every camera is also rendered from a randomly rotated viewpoint (the "augmented" view); the depth
the real cameras predict, moved into that view, supervises the augmented depth.  At evaluation a
fixed sweep of viewpoints (roll, pitch, focal length, a full yaw turn) is rendered into pictures and
an animation.

This module holds the parts that need no network, coded against plain tensors (the algorithm in
models/surround_fusion.py wires them to the fusion network):

* :func:`random_view_rotation` / :func:`augment_extrinsics`: the random rotation of the rig,
* :func:`synthesis_targets` (any leading dims) and :func:`rig_synthesis_targets` (a whole rig,
  sources = neighbours + self, all at once): the depth targets in the augmented view,
* :func:`synthesis_losses`: the consistency and smoothness terms (unweighted),
* :func:`synthesis_sweep` / :func:`render_sweep`: the evaluation sweep and its pictures.

Conventions (DESIGN.md): ``T_a_b`` maps points of frame b into frame a; extrinsics are
``E = T_rig_cam``; camera frames are OpenCV; the rig frame of DDAD and nuScenes is x forward,
y left, z up.

Rotation angles.  A view rotation is given by three angles (roll, pitch, yaw) that form an
**axis-angle vector in the rig frame**: roll is the component about rig x (forward), pitch about rig
y (left), yaw about rig z (up), R = exp([roll, pitch, yaw]_x), as the reference builds it
(pytorch3d ``axis_angle_to_matrix``).  For a single non-zero angle (the evaluation sweep) this is
the plain rotation about that axis; for the small random training angles it differs from any Euler
composition only at second order.  Right-hand rule: positive yaw turns the cameras to the left,
positive pitch tilts them down (x forward rotates towards -z), positive roll rotates about the
forward axis from y (left) towards z (up).  The rotation is about the rig origin and acts on the
rig side: ``E_aug = R_aug @ E`` (the camera keeps its pose relative to the rotated rig).
"""
from __future__ import annotations

import math
import os
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from geometry import (
    axis_angle_to_matrix,
    backproject,
    compose,
    invert_intrinsics,
    invert_transform,
    make_transform,
    project,
    sample_at_pixels,
    transform_point_map,
)

from .losses import masked_mean, plain_smoothness
from .neighbours import lists_to_slots, neighbour_lists

Number = Union[float, int, torch.Tensor]

# Denominator guard of the consistency ratio |a - b| / (a + b + eps) (the reference's value).
CONSISTENCY_EPS = 1e-8

# The evaluation sweep (spec §3.6 table; the reference's utils/visualize.aug_depth_params).
SWEEP_ROLL_MAX_DEG = 10.0      # roll: 0 -> +10 -> -10 -> 0 degrees, 152 frames
SWEEP_ROLL_STEPS = 75          # the roll is k / 75 * 10 degrees for the integer steps k below
SWEEP_PITCH_MAX_DEG = 5.0      # pitch: 0 -> +5 -> -5 -> 0 degrees, 103 frames
SWEEP_PITCH_STEPS = 50         # the pitch is k / 10 degrees, k in [-50, 50]
SWEEP_FOCAL_ZOOM_OUT = 1.5     # focal: scale 1 -> ratio / 1.5 (101 frames) -> ratio (51 frames)
SWEEP_FOCAL_OUT_FRAMES = 101
SWEEP_FOCAL_BACK_FRAMES = 51
SWEEP_YAW_FRAMES = 360         # yaw: 0, 1, ..., 359 degrees
SWEEP_SEGMENTS = (("roll", 152), ("pitch", 103), ("focal", 152), ("yaw", 360))
SWEEP_FRAMES = sum(n for _, n in SWEEP_SEGMENTS)  # 767


# ---------------------------------------------------------------------------------------- random view
def _check_angles(aug_angle_deg: Sequence[float]) -> List[float]:
    angles = [float(a) for a in aug_angle_deg]
    if len(angles) != 3 or any(not math.isfinite(a) or a < 0 for a in angles):
        raise ValueError(f"aug_angle must be three non-negative finite ranges (roll, pitch, yaw), got {list(aug_angle_deg)}")
    return angles


def random_view_rotation(
    batch_size: int,
    aug_angle_deg: Sequence[float],
    reference_radians: bool = False,
    generator: Optional[torch.Generator] = None,
    device: Optional[Union[str, torch.device]] = None,
    dtype: Optional[torch.dtype] = None,
    num_cams: Optional[int] = None,
) -> torch.Tensor:
    """Random rotations of the rig about its origin, one per batch item: R_aug [B, 4, 4].

    angle_i = (U_i - 0.5) * aug_angle_i with U_i ~ U[0, 1) independent, for i = (roll, pitch, yaw),
    so each angle lies in [-aug_angle_i / 2, aug_angle_i / 2); the three angles form an axis-angle
    vector in the rig frame (roll about x forward, pitch about y left, yaw about z up; see the
    module docstring).  Apply it with :func:`augment_extrinsics`: ``E_aug = R_aug @ E``.

    Args:
        batch_size: B.
        aug_angle_deg: full ranges (roll, pitch, yaw) in **degrees** (training.aug_angle).
        reference_radians: use the numbers as radians, without conversion, as the reference code
            does (training.reference_aug_angle_radians).  With the reference's [15, 15, 40] the
            components reach +-7.5, +-7.5 and +-20 rad: in effect an arbitrary rotation.
        generator: torch.Generator for reproducible draws (its device is where U is drawn; the
            result then moves to ``device``).
        device, dtype: of the result (default: the generator's device / the default dtype).
        num_cams: None for one rotation per item shared by all its cameras ([B, 4, 4]: a rotated
            rig); an integer N for an independent rotation per item and camera ([B, N, 4, 4]), as
            the reference draws them.
    Returns:
        [B, 4, 4] (or [B, N, 4, 4]) rotations with zero translation.
    """
    angles = _check_angles(aug_angle_deg)
    if batch_size < 1 or (num_cams is not None and num_cams < 1):
        raise ValueError(f"batch_size and num_cams must be >= 1, got {batch_size}, {num_cams}")
    dtype = dtype or torch.get_default_dtype()
    draw_device = generator.device if generator is not None else device
    shape = (batch_size, 3) if num_cams is None else (batch_size, num_cams, 3)
    uniform = torch.rand(shape, generator=generator, device=draw_device, dtype=torch.float64)
    unit = 1.0 if reference_radians else math.pi / 180.0
    ranges = torch.tensor(angles, dtype=torch.float64, device=uniform.device) * unit
    axis_angle = (uniform - 0.5) * ranges
    # Built in float64 (cheap: B x 3 numbers) so that float32 and float64 callers get the same draw.
    R = axis_angle_to_matrix(axis_angle)
    T = make_transform(R, torch.zeros_like(axis_angle))
    return T.to(device=device if device is not None else uniform.device, dtype=dtype)


def augment_extrinsics(extrinsics: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """E_aug = R_aug @ E: the cameras of the rig rotated about the rig origin.

    Args:
        extrinsics: [B, N, 4, 4] T_rig_cam.
        rotation: [B, 4, 4] (one rotation per item, shared by its cameras) or [B, N, 4, 4].
    Returns:
        [B, N, 4, 4] augmented extrinsics T_rig_aug.
    """
    if extrinsics.dim() != 4 or extrinsics.shape[-2:] != (4, 4):
        raise ValueError(f"extrinsics must be [B, N, 4, 4], got {tuple(extrinsics.shape)}")
    if rotation.dim() == 3:
        rotation = rotation[:, None]
    if rotation.dim() != 4 or rotation.shape[-2:] != (4, 4):
        raise ValueError(f"rotation must be [B, 4, 4] or [B, N, 4, 4], got {tuple(rotation.shape)}")
    return compose(rotation.to(extrinsics), extrinsics)


# ---------------------------------------------------------------------------------------- targets
def _as_bound(value: Number, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(value, dtype=like.dtype, device=like.device)


def synthesis_targets(
    depth_src: torch.Tensor,
    K_src: torch.Tensor,
    E_src: torch.Tensor,
    mask_src: torch.Tensor,
    depth_aug: torch.Tensor,
    K_aug: torch.Tensor,
    E_aug: torch.Tensor,
    min_depth: Number,
    max_depth: Number,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The depth a source camera implies in the augmented camera, on the augmented camera's pixels.

    1. Back-project the source depth with K_src and move the points into the augmented camera
       with T_aug_src = E_aug^-1 E_src; keep their z: the source's depth *as seen from the
       augmented camera*, still on the source pixel grid.
    2. Backward-warp that z-map into the augmented view: each augmented pixel is back-projected
       with the augmented depth, moved into the source camera with T_src_aug and projected with
       K_src; the z-map is sampled there bilinearly and the source mask with nearest sampling.
    3. valid = in front of the source camera and inside its image × sampled source mask ×
       (min_depth < target < max_depth); the target is clamped to [min_depth, max_depth].

    No stop-gradient: the target depends on both depth_src (its values) and depth_aug (where it
    is sampled), as in the reference.

    Args:
        depth_src: [..., 1, Hs, Ws] z-depth of the source camera.
        K_src: [..., 3, 3] source intrinsics at (Hs, Ws).
        E_src: [..., 4, 4] source extrinsics T_rig_src.
        mask_src: [..., 1, Hs, Ws] source self-occlusion mask (1 = scene).
        depth_aug: [..., 1, H, W] z-depth predicted in the augmented camera.
        K_aug: [..., 3, 3] augmented intrinsics at (H, W).
        E_aug: [..., 4, 4] augmented extrinsics T_rig_aug.
        min_depth, max_depth: the valid range (numbers, or tensors broadcasting against
            [..., 1, H, W]; the reference uses training.min_depth / max_depth).
    All leading dims broadcast, e.g. sources [S, B, N] against the augmented view [B, N].
    Returns:
        target [..., 1, H, W] (finite, clamped to the range) and valid [..., 1, H, W] float in {0, 1}
        (soft values of mask_src pass through).
    """
    for name, t, n in (("depth_src", depth_src, 1), ("mask_src", mask_src, 1), ("depth_aug", depth_aug, 1)):
        if t.dim() < 3 or t.shape[-3] != n:
            raise ValueError(f"{name} must be [..., 1, H, W], got {tuple(t.shape)}")
    if depth_src.shape[-2:] != mask_src.shape[-2:]:
        raise ValueError(f"depth_src {tuple(depth_src.shape)} and mask_src {tuple(mask_src.shape)} differ in size")
    for name, t, size in (("K_src", K_src, 3), ("K_aug", K_aug, 3), ("E_src", E_src, 4), ("E_aug", E_aug, 4)):
        if t.dim() < 2 or t.shape[-2:] != (size, size):
            raise ValueError(f"{name} must be [..., {size}, {size}], got {tuple(t.shape)}")

    T_aug_src = compose(invert_transform(E_aug), E_src)
    T_src_aug = invert_transform(T_aug_src)

    # 1. z of the source points in the augmented camera (only the third row of T_aug_src matters).
    points_src = backproject(depth_src, invert_intrinsics(K_src))  # [..., 3, Hs, Ws]
    R_z = T_aug_src[..., 2:3, :3]  # [..., 1, 3]
    t_z = T_aug_src[..., 2:3, 3:4]  # [..., 1, 1]
    hs, ws = points_src.shape[-2:]
    z_in_aug = (R_z @ points_src.flatten(-2) + t_z).unflatten(-1, (hs, ws))  # [..., 1, Hs, Ws]

    # 2. One projection of the augmented pixels into the source, used for both samplings.
    points_aug = backproject(depth_aug, invert_intrinsics(K_aug))  # [..., 3, H, W]
    pixels, inside = project(transform_point_map(T_src_aug, points_aug), K_src, image_hw=(hs, ws))
    target = sample_at_pixels(z_in_aug, pixels, mode="bilinear")
    mask = sample_at_pixels(mask_src.to(target.dtype), pixels, mode="nearest")

    # 3. Range and validity.  Non-finite values (only from a non-finite input) become invalid.
    lo, hi = _as_bound(min_depth, target), _as_bound(max_depth, target)
    finite = torch.isfinite(target)
    target = torch.where(finite, target, lo.expand_as(target))
    in_range = (target > lo) & (target < hi)
    # Clamp with where (not clamp_): the gradient of a clamped pixel is zero, it is invalid anyway.
    target = torch.where(target < lo, lo.expand_as(target), torch.where(target > hi, hi.expand_as(target), target))
    mask = torch.where(torch.isfinite(mask), mask, torch.zeros_like(mask))
    valid = mask * (inside & in_range & finite).to(target.dtype)
    return target, valid


def synthesis_source_slots(
    neighbours: Optional[Sequence[Optional[Sequence[int]]]], num_cams: int, device=None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The sources of every camera's targets as fixed slots: its neighbours, then itself.

    Args:
        neighbours: per camera its neighbour cameras (data.rel_cam_list); None or an empty/None
            entry: none (the camera's own depth is then its only source).
        num_cams: N.
    Returns:
        index [S, N] long (slot k of camera c is camera index[k, c]; the camera itself fills the
        slots beyond its list, marked invalid) and valid [S, N] float in {0, 1}.  The last valid
        slot of each camera is the camera itself (the reference's ``rel_cam_list[cam] + [cam]``).
    """
    sources = [row + [c] for c, row in enumerate(neighbour_lists(neighbours, num_cams))]
    return lists_to_slots(sources, device)


def rig_synthesis_targets(
    depth: torch.Tensor,
    K: torch.Tensor,
    extrinsics: torch.Tensor,
    mask: torch.Tensor,
    depth_aug: torch.Tensor,
    extrinsics_aug: torch.Tensor,
    neighbours: Optional[Sequence[Optional[Sequence[int]]]],
    min_depth: Number,
    max_depth: Number,
    K_aug: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """:func:`synthesis_targets` for a whole rig: every camera's augmented view from its
    neighbours and itself, all slots and cameras in one batched call.

    Args:
        depth: [B, N, 1, H, W] depth of the real cameras.
        K: [B, N, 3, 3]; extrinsics: [B, N, 4, 4] T_rig_cam; mask: [B, N, 1, H, W].
        depth_aug: [B, N, 1, H, W] depth of the augmented cameras.
        extrinsics_aug: [B, N, 4, 4] T_rig_aug (:func:`augment_extrinsics`).
        neighbours: data.rel_cam_list (see :func:`synthesis_source_slots`).
        min_depth, max_depth: the valid range.
        K_aug: [B, N, 3, 3] augmented intrinsics; default K (the reference keeps them).
    Returns:
        targets, valid: [S, B, N, 1, H, W]; padding slots have valid 0.
    """
    num_cams = depth.shape[1]
    index, slot_valid = synthesis_source_slots(neighbours, num_cams, device=depth.device)
    flat = index.reshape(-1)

    def gather(x: torch.Tensor) -> torch.Tensor:  # [B, N, ...] -> [S, B, N, ...]
        return x.index_select(1, flat).unflatten(1, index.shape).movedim(1, 0)

    slot_valid = slot_valid.to(mask.dtype)[:, None, :, None, None, None]
    targets, valid = synthesis_targets(
        gather(depth), gather(K), gather(extrinsics), gather(mask) * slot_valid,
        depth_aug, K if K_aug is None else K_aug, extrinsics_aug, min_depth, max_depth)
    return targets, valid


# ---------------------------------------------------------------------------------------- losses
def synthesis_losses(
    depth_aug: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor, disp_aug: torch.Tensor
) -> Dict[str, torch.Tensor]:
    """The two depth-synthesis terms (spec §4), unweighted (loss.depth_con_coeff / depth_sm_coeff).

    * depth_consistency: ``clamp(|d_aug - d_tf| / (d_aug + d_tf + 1e-8), 0, 1)`` averaged, per camera,
      over all source slots, batch items and pixels with ``valid`` as (soft) weights, then the
      mean over the cameras (VFDepth computes each camera's loss and averages the cameras, like
      models/surround_baseline.per_camera_masked_mean).  A camera without any valid pixel
      contributes 0 and still counts in the mean, as in the reference.
    * depth_smoothness: ``mean|dx d| + mean|dy d|`` of the mean-normalised augmented disparity
      (not edge-aware; models.losses.plain_smoothness).  All cameras have one size, so the global
      mean is the mean over cameras of the per-camera means.

    No stop-gradient: the consistency term pulls both the augmented depth and the targets (hence
    the real cameras' depth).

    Args:
        depth_aug: [B, N, 1, H, W] augmented depth.
        targets: [S, B, N, 1, H, W] synthesised targets (:func:`synthesis_targets`).
        valid: [S, B, N, 1, H, W] their validity (weights in [0, 1]).
        disp_aug: [B, N, 1, h, w] the augmented (sigmoid) disparity.
    Returns:
        {"depth_consistency": scalar, "depth_smoothness": scalar}.
    """
    if depth_aug.dim() != 5 or depth_aug.shape[2] != 1:
        raise ValueError(f"depth_aug must be [B, N, 1, H, W], got {tuple(depth_aug.shape)}")
    if targets.dim() != 6 or targets.shape[1:] != depth_aug.shape:
        raise ValueError(f"targets must be [S, *depth_aug.shape] = [S, {', '.join(map(str, depth_aug.shape))}], "
                         f"got {tuple(targets.shape)}")
    if valid.shape != targets.shape:
        raise ValueError(f"valid {tuple(valid.shape)} must have the shape of targets {tuple(targets.shape)}")
    if disp_aug.dim() != 5 or disp_aug.shape[:3] != depth_aug.shape[:3]:
        raise ValueError(f"disp_aug must be [B, N, 1, h, w] like depth_aug, got {tuple(disp_aug.shape)}")
    ratio = (depth_aug - targets).abs() / (depth_aug + targets + CONSISTENCY_EPS)
    error = ratio.clamp(0.0, 1.0)  # [S, B, N, 1, H, W]
    # Cameras first, then one masked mean per camera over slots, items and pixels.
    per_camera = masked_mean(error.movedim(2, 0), valid.to(error.dtype).movedim(2, 0), keep_dims=1)
    return {"depth_consistency": per_camera.mean(), "depth_smoothness": plain_smoothness(disp_aug)}


# ---------------------------------------------------------------------------------------- sweep
class SweepFrame(NamedTuple):
    """One viewpoint of the evaluation sweep: a label, intrinsics K [3, 3] and extrinsics E [4, 4]."""
    label: str
    K: torch.Tensor
    E: torch.Tensor


def _bounce(top: int, step: int) -> List[int]:
    """0 -> +top -> -top -> 0 in integer steps: [0, step, .., top) + [top, .., -top] + (-top, .., 0).

    The reference's ``range(0, top + 1, step) + range(top, -top - 1, -step) + range(-top, 1, step)``,
    built the same way so that the frame counts (152 for roll, 103 for pitch) match.
    """
    return list(range(0, top + 1, step)) + list(range(top, -top - 1, -step)) + list(range(-top, 1, step))


def sweep_parameters(focal_ratio: float = 1.0) -> Tuple[List[str], np.ndarray, np.ndarray]:
    """The full sweep as numbers: labels [767], angles [767, 3] (roll, pitch, yaw; degrees) and the
    focal-length scale [767] of each frame.  See :func:`synthesis_sweep`."""
    if not (focal_ratio > 0 and math.isfinite(focal_ratio)):
        raise ValueError(f"focal_ratio must be positive and finite, got {focal_ratio}")
    angles, scales, labels = [], [], []

    def add(label: str, roll: float, pitch: float, yaw: float, scale: float) -> None:
        labels.append(label)
        angles.append((roll, pitch, yaw))
        scales.append(scale)

    for k in _bounce(SWEEP_ROLL_STEPS, 2):  # 38 + 76 + 38 = 152 frames
        deg = k / SWEEP_ROLL_STEPS * SWEEP_ROLL_MAX_DEG
        add(f"roll {deg:+.2f} deg", deg, 0.0, 0.0, 1.0)
    for k in _bounce(SWEEP_PITCH_STEPS, 2):  # 26 + 51 + 26 = 103 frames
        deg = k / SWEEP_PITCH_STEPS * SWEEP_PITCH_MAX_DEG
        add(f"pitch {deg:+.2f} deg", 0.0, deg, 0.0, 1.0)
    low = focal_ratio / SWEEP_FOCAL_ZOOM_OUT
    out = SWEEP_FOCAL_OUT_FRAMES - 1
    back = SWEEP_FOCAL_BACK_FRAMES - 1
    # Linear in the scale, as the reference: 1 -> ratio/1.5 over 101 frames, then -> ratio over 51.
    focal = [i / out * low + (1 - i / out) for i in range(out + 1)]
    focal += [i / back * focal_ratio + (1 - i / back) * low for i in range(back + 1)]
    for s in focal:
        add(f"focal x{s:.3f}", 0.0, 0.0, 0.0, s)
    for i in range(SWEEP_YAW_FRAMES):  # the yaw turn keeps the last focal length (ratio)
        deg = 360.0 * i / SWEEP_YAW_FRAMES
        add(f"yaw {deg:.0f} deg", 0.0, 0.0, deg, focal[-1])
    assert len(labels) == SWEEP_FRAMES
    return labels, np.asarray(angles, dtype=np.float64), np.asarray(scales, dtype=np.float64)


def sweep_frame_indices(frames: Optional[Sequence[int]] = None, stride: int = 1) -> List[int]:
    """Which of the 767 sweep frames to use: ``frames`` (explicit indices, in the given order) or
    every ``stride``-th frame (0, stride, 2 stride, ...)."""
    if frames is not None:
        indices = [int(i) for i in frames]
        bad = [i for i in indices if not 0 <= i < SWEEP_FRAMES]
        if bad:
            raise ValueError(f"sweep frame indices must be in [0, {SWEEP_FRAMES - 1}], got {bad[:5]}")
        return indices
    if int(stride) < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    return list(range(0, SWEEP_FRAMES, int(stride)))


def synthesis_sweep(
    K0: torch.Tensor,
    E0: torch.Tensor,
    image_hw: Sequence[int],
    frames: Optional[Sequence[int]] = None,
    stride: int = 1,
    focal_ratio: float = 1.0,
) -> List[SweepFrame]:
    """The evaluation sweep of camera 0 (spec §3.6): 767 viewpoints, in four segments.

    ====== ====== ===========================================================================
    frames count  content (angles about the rig origin, see the module docstring)
    ====== ====== ===========================================================================
    0      152    roll about rig x: 0 -> +10° -> -10° -> 0 in steps of 10/75·2 degrees
    152    103    pitch about rig y: 0 -> +5° -> -5° -> 0 in steps of 0.2 degrees
    255    152    focal length: fx and fy scaled from 1 down to focal_ratio/1.5 (101 frames),
                  then up to focal_ratio (51 frames); cx, cy kept; no rotation
    407    360    yaw about rig z: 0, 1, ..., 359 degrees (a full turn), at the last focal length
    ====== ====== ===========================================================================

    As in the reference, six consecutive pairs of frames repeat a viewpoint where a segment turns
    or hands over (frames 113/114 roll -10°, 177/178 pitch +5°, 228/229 pitch -5°, 254/255 pitch 0 =
    focal 1, 355/356 the lowest focal length, 406/407 the last focal frame = yaw 0°); they are kept
    so that the count and the frame numbers match the reference's 767.

    ``focal_ratio``: the spec's "(fx₁/fx₀)" is, in the reference code, the focal length of
    **camera 1** over that of camera 0 (``K[:, 1, 0, 0] / K[:, 0, 0, 0]``), so the zoom ends (and
    the yaw turn runs) at camera 1's focal length.  Pass ``K[1][0, 0] / K[0][0, 0]`` to reproduce
    that; the default 1.0 is the camera-0-only reading: a zoom-out to 1/1.5 and back to camera 0's
    own focal length.

    Args:
        K0: [3, 3] camera 0's intrinsics at ``image_hw``.
        E0: [4, 4] camera 0's extrinsics T_rig_cam.
        image_hw: (H, W) the rendered size (checked against K0's principal point).
        frames: explicit frame indices in [0, 767) (see :func:`sweep_frame_indices`), or
        stride: every stride-th frame (the CPU demo renders fewer).
        focal_ratio: see above.
    Returns:
        [SweepFrame(label, K [3, 3], E [4, 4])] with E = R @ E0, on K0's device and dtype.
    """
    if K0.shape != (3, 3) or E0.shape != (4, 4):
        raise ValueError(f"K0 must be [3, 3] and E0 [4, 4], got {tuple(K0.shape)} and {tuple(E0.shape)}")
    height, width = (int(v) for v in image_hw)
    if height < 1 or width < 1:
        raise ValueError(f"image_hw must be positive, got {tuple(image_hw)}")
    cx, cy = float(K0[0, 2]), float(K0[1, 2])
    if not (-0.5 <= cx <= width - 0.5 and -0.5 <= cy <= height - 0.5):
        raise ValueError(f"K0's principal point ({cx:.1f}, {cy:.1f}) is outside the {width}x{height} image: "
                         f"are K0 and image_hw at the same resolution?")
    indices = sweep_frame_indices(frames, stride)
    labels, angles_deg, scales = sweep_parameters(focal_ratio)
    idx = np.asarray(indices, dtype=np.int64)
    radians = torch.from_numpy(np.deg2rad(angles_deg[idx]))  # float64 for exact extremes
    R = make_transform(axis_angle_to_matrix(radians), torch.zeros_like(radians))  # [F, 4, 4]
    E = compose(R.to(E0), E0)
    scale = torch.from_numpy(scales[idx]).to(K0)
    K = K0.expand(len(indices), 3, 3).clone()
    K[:, 0, 0] = K0[0, 0] * scale  # the reference scales fx and fy (and with them the skew-free
    K[:, 1, 1] = K0[1, 1] * scale  # pinhole) about the principal point, which stays put
    return [SweepFrame(labels[i], K[j], E[j]) for j, i in enumerate(indices)]


def _write_png(path: str, rgb: np.ndarray) -> None:
    import cv2

    from utils.atomic import write_bytes_atomic

    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    if not ok:
        raise RuntimeError(f"could not encode {path} as PNG")
    write_bytes_atomic(path, encoded.tobytes())


def _write_gif(path: str, frames: List, duration_ms: int) -> None:
    """Animated GIF (looping) from PIL images, atomically.  PIL merges identical consecutive
    frames into one with the summed duration, so the timing is kept but the frame count may drop."""
    from utils.atomic import atomic_open

    with atomic_open(path, "wb") as f:
        frames[0].save(f, format="GIF", save_all=True, append_images=frames[1:], duration=duration_ms, loop=0)


def render_sweep(
    render_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    K0: torch.Tensor,
    E0: torch.Tensor,
    image_hw: Sequence[int],
    out_dir: Union[str, os.PathLike],
    stride: int = 1,
    progress: bool = True,
    frames: Optional[Sequence[int]] = None,
    focal_ratio: float = 1.0,
    min_depth: Optional[float] = None,
    max_depth: Optional[float] = None,
    gif_duration_ms: int = 40,
    gif_name: str = "synthesis.gif",
) -> List[str]:
    """Render the sweep of :func:`synthesis_sweep` and write it as pictures and an animation.

    Writes ``out_dir/NNN_syndepth.png`` per frame (NNN: the frame's index in the full 767-frame
    sweep, zero-padded to 3 digits, so a subsampled run names its files like the full one) and
    ``out_dir/<gif_name>``, all atomically.  Depth is colourised by inverse depth
    (utils.visualization.colorize_depth) with one range for every frame, so that colours are
    comparable along the animation: [min_depth, max_depth], each defaulting to the first frame's
    valid range.  Rendering runs under ``torch.no_grad``.

    Args:
        render_fn: (K [1, 1, 3, 3], E [1, 1, 4, 4]) -> depth [1, 1, 1, H, W] (metres; 0 or
            non-finite = nothing there, drawn black).
        K0, E0, image_hw, stride, frames, focal_ratio: as :func:`synthesis_sweep`.
        out_dir: folder (created).
        progress: a tqdm progress bar.
        min_depth, max_depth: fixed colour range (see above).
        gif_duration_ms: display time per frame.
        gif_name: the animation's file name.
    Returns:
        the written paths: the PNGs in sweep order, then the GIF.
    """
    from PIL import Image
    from tqdm import tqdm

    from utils.visualization import colorize_depth, depth_range

    height, width = (int(v) for v in image_hw)
    sweep = synthesis_sweep(K0, E0, image_hw, frames=frames, stride=stride, focal_ratio=focal_ratio)
    indices = sweep_frame_indices(frames, stride)
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    written: List[str] = []
    gif_frames = []
    lo, hi = min_depth, max_depth
    with torch.no_grad():
        for index, frame in tqdm(list(zip(indices, sweep)), desc="depth synthesis sweep", disable=not progress,
                                 unit="frame"):
            depth = render_fn(frame.K[None, None], frame.E[None, None])
            if not isinstance(depth, torch.Tensor) or tuple(depth.shape) != (1, 1, 1, height, width):
                shape = tuple(depth.shape) if isinstance(depth, torch.Tensor) else type(depth).__name__
                raise ValueError(f"render_fn must return depth [1, 1, 1, {height}, {width}], got {shape} "
                                 f"(frame {index}, {frame.label})")
            depth = depth[0, 0, 0].float().cpu()
            if lo is None or hi is None:
                first = depth_range(depth)
                if first is not None:
                    lo = first[0] if lo is None else lo
                    hi = first[1] if hi is None else hi
            rgb = colorize_depth(depth, min_depth=lo, max_depth=hi)
            path = os.path.join(out_dir, f"{index:03d}_syndepth.png")
            _write_png(path, rgb)
            written.append(path)
            # Palette images (1 byte per pixel) keep the whole animation in memory cheaply.
            gif_frames.append(Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=256))
    if gif_frames:
        gif_path = os.path.join(out_dir, gif_name)
        _write_gif(gif_path, gif_frames, gif_duration_ms)
        written.append(gif_path)
    return written


__all__ = [
    "SWEEP_FRAMES",
    "SWEEP_SEGMENTS",
    "SweepFrame",
    "augment_extrinsics",
    "random_view_rotation",
    "render_sweep",
    "rig_synthesis_targets",
    "sweep_frame_indices",
    "sweep_parameters",
    "synthesis_losses",
    "synthesis_source_slots",
    "synthesis_sweep",
    "synthesis_targets",
]
