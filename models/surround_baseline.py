"""The per-camera (FSM-style) baseline of VFDepth: ``model.type: surround_depth`` with
``model.depth_model: fsm`` and ``model.pose_model: fsm`` (spec/vfdepth.md §3.3-§4).

Networks (shared by all cameras; the cameras are packed into the batch, see network.pack_cameras):

* ``depth_net``: :class:`network.MonoDepthNet` (ResNet + monodepth2 decoder with skips) on the
  target frame of every camera -> sigmoid disparity sigma per scale ->
  ``depth = 1 / (1/max + (1/min - 1/max)·sigma) · fx / focal_length_scale`` (fx of that camera at
  the input resolution, models/depth_utils.py), after bringing sigma to the input size (monodepth2:
  the losses of every scale are computed at full resolution).  The decoder always has skip
  connections (the reference baseline's monodepth2 decoder); model.use_skips is the fusion
  decoder's switch and is not read here.
* ``pose_net``: :class:`network.MonoPoseNet` per camera and context offset f: input [I_f, I_0] for
  f < 0 and [I_0, I_f] for f > 0 (the colour-jittered ``image_aug`` when present), output
  ``T = Trans(t)·R(axis_angle)``, inverted for f < 0, so that ``poses[f][b, c]`` is
  ``T_c(t+f)_c(t)``: it maps points of camera c at the target frame into camera c at frame t+f
  (VFDepth's ``cam_T_cam``, models.base.Predictions.poses).

Loss terms (compute_losses; each weighted, then summed into "total"; per camera first, then the
mean over cameras, then the mean over ``training.scales``):

* ``temporal``: min over f of pe(warp of I_f with depth and T_c[f], I_0), masked by the auto-mask
  (warped minimum below the identity minimum pe(I_f, I_0)) times the self-occlusion mask.
* ``spatial`` (training.spatio, × loss.spatio_coeff): the neighbours j of camera c
  (data.rel_cam_list[c]) at the target frame, warped with T_j_c = E_j^-1 E_c and combined into one
  overlap view; masked by the target mask × the overlap mask.
* ``spatio_temporal`` (training.spatio_temporal, × loss.spatio_tempo_coeff): the neighbours at
  frame t+f, warped with (E_j^-1 E_c)·T_c[f]; per f the error of the overlap view, min over f,
  masked by the target mask × max_f overlap mask × the auto-mask.
* ``smoothness`` (× loss.disparity_smoothness): edge-aware smoothness of each scale's
  (mean-normalised) disparity against the un-jittered target image resized to that scale, divided
  by 2**scale as monodepth2 does (so coarse scales weigh less).
* ``pose_consistency`` (× loss.pose_loss_coeff, when > 0): every camera's motion moved through the
  extrinsics into camera 0's frame should equal camera 0's motion.  The reference adds it to each
  camera's loss with 0 for camera 0 and averages over the N cameras; the term here is the same
  number: models.losses.pose_consistency_loss (a mean over the N-1 other cameras) × (N-1)/N.
  Computed once (poses do not depend on the scale).

All photometric terms use the un-jittered ``image``; every warp is intensity-aligned to the target
when training.intensity_align (temporal ones included, as in the reference).  The overlap view is
the mask-weighted average of the neighbours with the union of their masks, or the reference's sum
of images and masks (values up to 2) with loss.reference_overlap_mask_sum.

Cameras without neighbours (data.rel_cam_list None, or an empty/None entry: 1- or 2-camera rigs,
rigs whose neighbours nobody listed) have no spatial or spatio-temporal loss: those terms are
averaged over the cameras that have neighbours, and left out of the loss dict when no camera has.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch

from geometry import compose, pose_from_axis_angle_translation
from network import MonoDepthNet, MonoPoseNet, pack_cameras, unpack_cameras
from network.recompute import recomputed

from .base import Algorithm, Predictions
from .neighbours import neighbour_slots
from .depth_utils import focal_scaled_depth, resize_maps
from .losses import (
    align_intensity,
    automask,
    edge_aware_smoothness,
    masked_mean,
    min_reprojection,
    overlap_view,
    photometric_error,
    pose_consistency_loss,
    spatial_transform,
    warp_views,
)

AUTOMASK_NOISE_STD = 1e-5  # VFDepth's tie-breaking noise on the identity error
POSE_ROTATION_WEIGHT = 10.0  # weight of the Euler-angle part of the pose consistency loss


# ---------------------------------------------------------------------------------------- helpers
def frame_index(frame_ids: Sequence[int], offset: int) -> int:
    """Position of frame offset ``offset`` in ``frame_ids`` (the T dimension of the images)."""
    frame_ids = list(frame_ids)
    if offset not in frame_ids:
        raise ValueError(f"frame offset {offset} is not in the batch's frame_ids {frame_ids}")
    return frame_ids.index(offset)


def temporal_pairs(images: torch.Tensor, frame_ids: Sequence[int]):
    """The pose networks' inputs: the context offsets f != 0 of frame_ids, and for all of them at
    once the frame pairs in temporal order, [I_f, I_0] for f < 0 and [I_0, I_f] for f > 0, as
    (firsts, seconds) [F·B, N, 3, H, W] (offset-major) from images [B, T, N, 3, H, W]; both None
    when there is no context frame."""
    frame_ids = [int(f) for f in frame_ids]
    context = [f for f in frame_ids if f != 0]
    if not context:
        return context, None, None
    target = images[:, frame_index(frame_ids, 0)]
    others = [images[:, frame_index(frame_ids, f)] for f in context]
    firsts = torch.cat([other if f < 0 else target for f, other in zip(context, others)])
    seconds = torch.cat([target if f < 0 else other for f, other in zip(context, others)])
    return context, firsts, seconds


def batch_frame_ids(batch: Dict) -> List[int]:
    """The frame offsets of a batch (``frame_ids`` [B, T], the same for every item)."""
    ids = batch["frame_ids"]
    if isinstance(ids, torch.Tensor):
        if ids.dim() == 2:
            if ids.shape[0] > 1 and not bool((ids == ids[:1]).all()):
                raise ValueError(f"the items of a batch have different frame_ids: {ids.tolist()}")
            ids = ids[0]
        return [int(f) for f in ids.tolist()]
    return [int(f) for f in ids]


def per_camera_masked_mean(loss: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """VFDepth's per-camera loss: the masked mean over a camera's batch items and pixels.

    Args:
        loss: [B, N, 1, H, W] per-pixel loss.
        mask: broadcastable with loss (soft weights allowed).
    Returns:
        [N] one masked mean per camera.
    """
    loss, mask = torch.broadcast_tensors(loss, mask)
    return masked_mean(loss.transpose(0, 1), mask.transpose(0, 1), keep_dims=1)


def _camera_average(per_camera: torch.Tensor, weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean over cameras [N] -> scalar, over the cameras with weight 1 when ``weights`` is given."""
    if weights is None:
        return per_camera.mean()
    return (per_camera * weights).sum() / weights.sum().clamp(min=1.0)


def _warp_and_align(
    source_images: torch.Tensor,
    source_masks: torch.Tensor,
    depth: torch.Tensor,
    K_target: torch.Tensor,
    K_source: torch.Tensor,
    T_source_target: torch.Tensor,
    target_image: torch.Tensor,
    target_mask: torch.Tensor,
    intensity_align: bool,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """warp_views, then (optionally) intensity alignment to the target over target mask × warp mask.
    All leading dims broadcast; returns image [..., 3, H, W] and mask [..., 1, H, W]."""
    image, mask = warp_views(source_images, source_masks, depth, K_target, K_source, T_source_target)
    if intensity_align:
        image = align_intensity(image, target_image, target_mask * mask, mask)
    return image, mask


# ---------------------------------------------------------------------------------------- losses
def view_synthesis_losses(
    images: torch.Tensor,
    masks: torch.Tensor,
    K: torch.Tensor,
    extrinsics: torch.Tensor,
    depth: torch.Tensor,
    poses: Dict[int, torch.Tensor],
    frame_ids: Sequence[int],
    neighbours: Optional[Sequence[Optional[Sequence[int]]]] = None,
    *,
    temporal: bool = True,
    spatio: bool = True,
    spatio_temporal: bool = True,
    intensity_align: bool = True,
    ssim_weight: float = 0.85,
    reference_overlap_sum: bool = False,
    automask_noise_std: float = AUTOMASK_NOISE_STD,
    identity_errors: Optional[torch.Tensor] = None,
    record: Optional[Dict[str, torch.Tensor]] = None,
    recompute: bool = False,
) -> Dict[str, torch.Tensor]:
    """The photometric terms of the surround-view models for one depth map (unweighted).

    Takes depth and poses explicitly, so that any source of them (the networks, the ground truth)
    goes through the same code.  Vectorised over batch, cameras, frames and neighbour slots.

    Args:
        images: [B, T, N, 3, H, W] un-jittered images, frames ordered as ``frame_ids``.
        masks: [B, N, 1, H, W] self-occlusion masks (1 = scene), the same at every frame.
        K: [B, N, 3, 3] intrinsics at (H, W).
        extrinsics: [B, N, 4, 4] T_rig_cam.
        depth: [B, N, 1, H, W] depth of the target frame (offset 0) in metres.
        poses: {f: [B, N, 4, 4]} T_c(t+f)_c(t) for every offset f != 0 of frame_ids.
        frame_ids: the T frame offsets, 0 among them.
        neighbours: per camera its neighbour cameras (data.rel_cam_list); None or empty: none.
        temporal / spatio / spatio_temporal: which terms to compute.
        intensity_align: align every warp to the target's mean and std (spec §3.5).
        ssim_weight: photometric error = w·SSIM' + (1 − w)·L1.
        reference_overlap_sum: VFDepth's sum of the neighbour warps and masks instead of their
            mask-weighted average and union.
        automask_noise_std: tie-breaking noise of the auto-mask (0: none).
        identity_errors: optional precomputed [F, B, N, 1, H, W] pe(I_f, I_0) for the context
            offsets in frame_ids order (they do not depend on depth or pose).
        record: when a dict is given, the maps behind the terms are stored in it (detached), for
            pictures: "temporal_warps" [F, B, N, 3, H, W] (the aligned warps of the context
            frames, frame_ids order), "temporal_error" [B, N, 1, H, W] (their per-pixel minimum
            error), "automask" [B, N, 1, H, W]; with the spatial term "spatial_warp"
            [B, N, 3, H, W] and "spatial_mask" [B, N, 1, H, W] (the overlap view and its mask).
            Only references are kept: nothing extra is computed.
        recompute: keep none of the warps' and errors' intermediate maps for the backward pass;
            recompute each term's when its gradient is needed (training.activation_checkpointing).
            The terms are recomputed one at a time, so the peak holds one term's maps, not all.
            (What a term's closure reads from this scope must not be rebound after it is made: the
            recomputation runs later; the tensors that are rebound are passed as arguments.)
    Returns:
        {"temporal", "spatial", "spatio_temporal"}: scalars, each present when asked for and
        computable (temporal needs a context frame; the spatial terms a camera with neighbours,
        spatio_temporal also a context frame).  Per camera, then averaged over cameras (for the
        spatial terms over the cameras that have neighbours).
    """
    frame_ids = [int(f) for f in frame_ids]
    context = [f for f in frame_ids if f != 0]
    num_cams = images.shape[2]
    target_index = frame_index(frame_ids, 0)
    target = images[:, target_index]  # [B, N, 3, H, W]
    out: Dict[str, torch.Tensor] = {}

    auto = None
    if context and (temporal or spatio_temporal):
        context_images = torch.stack([images[:, frame_index(frame_ids, f)] for f in context])  # [F, B, N, 3, H, W]
        context_poses = torch.stack([poses[f] for f in context])  # [F, B, N, 4, 4]

        def temporal_errors(sources, transforms):
            warped, _ = _warp_and_align(sources, masks, depth, K, K, transforms, target, masks, intensity_align)
            return photometric_error(warped, target, ssim_weight), warped  # [F, B, N, 1, H, W], [F, B, N, 3, H, W]

        errors, warped = recomputed(temporal_errors, context_images, context_poses, enabled=recompute)
        if identity_errors is None:
            identity_errors = photometric_error(context_images, target, ssim_weight)
        auto = automask(errors, identity_errors, noise_std=automask_noise_std)
        if temporal:
            out["temporal"] = _camera_average(per_camera_masked_mean(min_reprojection(errors), auto * masks))
        if record is not None:
            record.update(temporal_warps=warped.detach(), temporal_error=min_reprojection(errors).detach(),
                          automask=auto.detach())

    if not (spatio or (spatio_temporal and context)):
        return out
    index, valid = neighbour_slots(neighbours, num_cams, images.device)
    if index.shape[0] == 0:
        return out
    has_neighbours = valid.max(dim=0).values  # [N]
    slot_valid = valid[:, None, :, None, None, None]  # [S, 1, N, 1, 1, 1]
    source_K = torch.stack([K[:, idx] for idx in index])  # [S, B, N, 3, 3]
    source_E = torch.stack([extrinsics[:, idx] for idx in index])  # [S, B, N, 4, 4]
    source_masks = torch.stack([masks[:, idx] for idx in index]) * slot_valid  # [S, B, N, 1, H, W]
    T_source_target = spatial_transform(extrinsics, source_E)  # [S, B, N, 4, 4]: E_j^-1 E_c

    def overlap(source_images: torch.Tensor, transforms: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Warp the neighbour slots (dim -6 of source_images: [..., S, B, N, 3, H, W]) and combine."""
        image, mask = _warp_and_align(source_images, source_masks, depth, K, source_K, transforms,
                                      target, masks, intensity_align)
        mask = mask * slot_valid
        image = image * mask  # zero outside each warp (invalid slots included) before combining
        slots = list(zip(image.unbind(-6), mask.unbind(-6)))
        return overlap_view(slots, reference_sum=reference_overlap_sum)

    if spatio:
        source_images = torch.stack([target[:, idx] for idx in index])  # [S, B, N, 3, H, W]

        def spatial_error(sources):
            image, mask = overlap(sources, T_source_target)
            return photometric_error(image, target, ssim_weight), image, mask

        error, image, mask = recomputed(spatial_error, source_images, enabled=recompute)
        out["spatial"] = _camera_average(per_camera_masked_mean(error, masks * mask), has_neighbours)
        if record is not None:
            record.update(spatial_warp=image.detach(), spatial_mask=mask.detach())

    if spatio_temporal and context:
        source_images = torch.stack([context_images[:, :, idx] for idx in index], dim=1)  # [F, S, B, N, 3, H, W]
        transforms = compose(T_source_target[None], context_poses[:, None])  # [F, S, B, N, 4, 4]

        def spatio_temporal_errors(sources, transforms):
            image, mask = overlap(sources, transforms)  # [F, B, N, ...]
            return photometric_error(image, target, ssim_weight), mask  # [F, B, N, 1, H, W]

        errors, mask = recomputed(spatio_temporal_errors, source_images, transforms, enabled=recompute)
        loss_mask = masks * mask.max(dim=0).values * auto
        out["spatio_temporal"] = _camera_average(
            per_camera_masked_mean(min_reprojection(errors), loss_mask), has_neighbours)
    return out


# ---------------------------------------------------------------------------------------- model
class SurroundBaseline(Algorithm):
    """VFDepth's FSM-style baseline: per-camera depth and pose networks shared over the cameras.

    forward(batch) -> {"disp": {scale: [B, N, 1, h_s, w_s]}, "depth": {scale: [B, N, 1, H, W]},
    "poses": {f: [B, N, 4, 4]}, "frame_ids": [T offsets]}; see the module docstring for the losses.
    """

    network_names = ("depth_net", "pose_net")

    def __init__(self, cfg):
        super().__init__(cfg)
        model, training = cfg.model, cfg.training
        self.scales = sorted({int(s) for s in training.scales})
        self.depth_net = MonoDepthNet(model.num_layers, model.weights_init, scales=self.scales, use_skips=True)
        self.pose_net = MonoPoseNet(model.num_layers, model.weights_init)

    # -------------------------------------------------------------------------------- networks
    @staticmethod
    def _network_input(batch: Dict) -> torch.Tensor:
        """[B, T, N, 3, H, W]: the colour-jittered images when the batch has them (training)."""
        return batch["image_aug"] if "image_aug" in batch else batch["image"]

    def to_depth(self, disp: torch.Tensor, K: torch.Tensor, image_hw: Sequence[int]) -> torch.Tensor:
        """Sigmoid disparity [B, N, 1, h, w] -> depth [B, N, 1, H, W] at the input size (bilinear
        upsampling of the disparity first, as monodepth2), focal-scaled with K [B, N, 3, 3]."""
        t = self.cfg.training
        return focal_scaled_depth(resize_maps(disp, image_hw), K, t.min_depth, t.max_depth, t.focal_length_scale)

    def predict_depth(
        self, images: torch.Tensor, K: torch.Tensor
    ) -> Tuple[Dict[int, torch.Tensor], Dict[int, torch.Tensor]]:
        """Target images [B, N, 3, H, W] -> ({scale: disp [B, N, 1, h, w]}, {scale: depth [B, N, 1, H, W]})."""
        b, n = images.shape[:2]
        disps = {s: unpack_cameras(d, b, n) for s, d in self.depth_net(pack_cameras(images)).items()}
        depths = {s: self.to_depth(d, K, images.shape[-2:]) for s, d in disps.items()}
        return disps, depths

    def predict_poses(self, images: torch.Tensor, frame_ids: Sequence[int]) -> Dict[int, torch.Tensor]:
        """Images [B, T, N, 3, H, W] (frames as frame_ids) -> {f: T_c(t+f)_c(t) [B, N, 4, 4]} for f != 0.

        One pose-net pass for all offsets, batch items and cameras."""
        context, firsts, seconds = temporal_pairs(images, frame_ids)
        if not context:
            return {}
        b, _, n = images.shape[:3]
        axis_angle, translation = self.pose_net(pack_cameras(firsts), pack_cameras(seconds))
        axis_angle = axis_angle.reshape(len(context), b, n, 3)
        translation = translation.reshape(len(context), b, n, 3)
        return {f: pose_from_axis_angle_translation(axis_angle[i], translation[i], invert=f < 0)
                for i, f in enumerate(context)}

    def forward(self, batch: Dict) -> Dict:
        frame_ids = batch_frame_ids(batch)
        images = self._network_input(batch)
        disps, depths = self.predict_depth(images[:, frame_index(frame_ids, 0)], batch["K"])
        poses = self.predict_poses(images, frame_ids)
        return {"disp": disps, "depth": depths, "poses": poses, "frame_ids": frame_ids}

    # -------------------------------------------------------------------------------- losses
    def view_losses(
        self, batch: Dict, depth: torch.Tensor, poses: Dict[int, torch.Tensor],
        identity_errors: Optional[torch.Tensor] = None, record: Optional[Dict[str, torch.Tensor]] = None,
    ) -> Dict[str, torch.Tensor]:
        """The unweighted photometric terms ("temporal", "spatial", "spatio_temporal") of one
        depth map [B, N, 1, H, W] and the poses {f: [B, N, 4, 4]}, with this config's switches.
        Used by compute_losses; call it with other depths/poses (e.g. ground truth) to check them."""
        t, loss = self.cfg.training, self.cfg.loss
        return view_synthesis_losses(
            batch["image"], batch["mask"], batch["K"], batch["extrinsics"], depth, poses, batch_frame_ids(batch),
            self.cfg.data.rel_cam_list,
            spatio=bool(t.spatio and loss.spatio_coeff > 0),
            spatio_temporal=bool(t.spatio_temporal and loss.spatio_tempo_coeff > 0),
            intensity_align=t.intensity_align, ssim_weight=loss.ssim_weight,
            reference_overlap_sum=loss.reference_overlap_mask_sum, identity_errors=identity_errors, record=record,
            recompute=t.activation_checkpointing)

    def compute_losses(self, batch: Dict, outputs: Dict) -> Dict[str, torch.Tensor]:
        loss_cfg = self.cfg.loss
        frame_ids = batch_frame_ids(batch)
        images = batch["image"]
        target = images[:, frame_index(frame_ids, 0)]
        context = [f for f in frame_ids if f != 0]
        identity = None
        if context:
            with torch.no_grad():
                identity = photometric_error(
                    torch.stack([images[:, frame_index(frame_ids, f)] for f in context]), target, loss_cfg.ssim_weight)
        weights = {"temporal": 1.0, "spatial": loss_cfg.spatio_coeff, "spatio_temporal": loss_cfg.spatio_tempo_coeff}
        sums: Dict[str, torch.Tensor] = {}
        scales = sorted(outputs["depth"])
        for s in scales:
            for name, value in self.view_losses(batch, outputs["depth"][s], outputs["poses"], identity).items():
                sums[name] = sums.get(name, 0.0) + weights[name] * value
            if loss_cfg.disparity_smoothness > 0:
                disp = outputs["disp"][s]
                image = resize_maps(target, disp.shape[-2:], mode="area")
                smooth = edge_aware_smoothness(disp, image) / (2 ** s)
                sums["smoothness"] = sums.get("smoothness", 0.0) + loss_cfg.disparity_smoothness * smooth
        losses = {name: value / len(scales) for name, value in sums.items()}
        poses = outputs["poses"]
        if loss_cfg.pose_loss_coeff > 0 and poses:
            n = batch["extrinsics"].shape[1]
            stacked = torch.stack([poses[f] for f in sorted(poses)], dim=1)  # [B, F, N, 4, 4]
            consistency = pose_consistency_loss(stacked, batch["extrinsics"][:, None], POSE_ROTATION_WEIGHT)
            losses["pose_consistency"] = loss_cfg.pose_loss_coeff * consistency * ((n - 1) / n)
        losses["total"] = sum(losses.values())
        return losses

    # -------------------------------------------------------------------------------- predictions
    def predict(self, batch: Dict, outputs: Dict) -> Predictions:
        finest = min(outputs["depth"])
        return Predictions(depth=outputs["depth"][finest], poses=dict(outputs["poses"]),
                           extras={"disp": outputs["disp"][finest]})

    def visuals(self, batch: Dict, outputs: Dict) -> Dict[str, torch.Tensor]:
        """The maps behind the photometric terms at the finest scale, for the first batch item
        (B = 1: the logger shows that one), each [1, N, C, H, W] in [0, 1]:

        * ``temporal_warp_prev<k>`` / ``temporal_warp_next<k>`` (C 3): context frame -k / +k
          warped into the target view with the predicted depth and pose (intensity-aligned when
          training.intensity_align, as the loss sees it);
        * ``temporal_error`` (C 1): the per-pixel minimum photometric error over those warps;
        * ``automask`` (C 1): 1 where a warp explains the target better than a still frame;
        * ``spatial_warp`` / ``spatial_mask`` (spatial term on, cameras with neighbours): the
          overlap view of the neighbouring cameras and where it is valid (the reference's summed
          mask, which reaches 2 where two neighbours overlap, is clipped to 1).

        The losses keep none of these, so they are recomputed here, by the same code, for one
        item: the steps that do not log pay nothing. Clipped to [0, 1] (alignment can overshoot).
        """
        finest = min(outputs["depth"])
        item = {k: v[:1] for k, v in batch.items() if isinstance(v, torch.Tensor)}
        depth = outputs["depth"][finest][:1].detach()
        poses = {f: pose[:1].detach() for f, pose in outputs["poses"].items()}
        record: Dict[str, torch.Tensor] = {}
        self.view_losses(item, depth, poses, record=record)
        out: Dict[str, torch.Tensor] = {}
        context = [f for f in batch_frame_ids(item) if f != 0]
        if "temporal_warps" in record:
            for f, warp in zip(context, record["temporal_warps"]):
                out[f"temporal_warp_{'prev' if f < 0 else 'next'}{abs(f)}"] = warp
            out["temporal_error"] = record["temporal_error"]
            out["automask"] = record["automask"]
        if "spatial_warp" in record:
            out["spatial_warp"] = record["spatial_warp"]
            out["spatial_mask"] = record["spatial_mask"]
        return {name: picture.float().clamp(0, 1) for name, picture in out.items()}
