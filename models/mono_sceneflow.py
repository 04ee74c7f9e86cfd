"""Multi-frame monocular scene flow (multi-mono-sf, CVPR 2021): ``model.type: mono_sceneflow``.

Network (``sceneflow_net``, :class:`network.MonoSceneFlowNet`): from the left camera's T-frame
sequence alone (frames sorted by their offset in ``data.frame_ids``), for every centre frame the
disparity (a fraction of the width) and the scene flow to the next and the previous frame, at
``model.output_level + 1`` scales. The target frame (offset 0) must be a centre frame; with the
reference's 5 frames [-3, -2, -1, 0, 1] it is the last one, whose ConvLSTM has seen the most
history. The right camera is only used by the losses.

forward(batch) -> {
    "left": the network's outputs on the left sequence {"sf_f", "sf_b", "disp"}: per centre frame
        (sorted order) a list over scales of [B, C, h, w];
    "right_disp": (training, stereo batches) the right view's disparity per centre frame and scale,
        from the flipped right sequence, without gradient (occlusion masks only);
    "pp": (evaluation with eval.flip_post_process, or fine-tuning on batches with KITTI 2015 ground
        truth) the target frame's outputs post-processed with the flipped pass, per scale;
    "frame_ids": the sorted offsets, "target_step": the target's index among the centre frames,
    "baseline": [B] metres }

Baseline: the x translation from the first to the second camera of ``batch["extrinsics"]`` when
the batch holds a stereo pair, else :data:`REFERENCE_BASELINE` (0.54 m, the reference's constant
for every dataset). It turns disparity into metric depth: depth = fx * b / (d * W + 1e-4),
clamped to [1e-3, 80] m.

Losses (compute_losses, spec §3; the images are the un-jittered ``image``, the network sees
``image_aug`` when present):

* ``disparity``: over the scales s with ``loss.scale_weights[s]``, for every centre frame, census
  between the left image and the right image warped with the left disparity on the pixels the
  right view sees (from the right disparity), + sf_disp_smooth_coeff * second-order edge-aware
  smoothness of the disparity / 2^s;
* ``scene_flow``: for the pairs of consecutive centre frames (src, tgt), the forward flow of src
  and the backward flow of tgt: census both ways through 3D on the pixels visible in the other
  frame and in the right view, + sf_pts_coeff * the relative 3D point error, + sf_smooth_coeff *
  the 3D smoothness of both flows / 2^s. The disparity is detached inside this term during the
  first ``training.detach_disp_epochs`` epochs (the reference's ``curr_epoch <= 2`` with its
  1-based epochs; the trainer's are 0-based and reach the algorithm through set_epoch);
* both balanced to the larger one's magnitude (models.losses.balance); ``total`` is their sum.
* With ``training.finetuning`` and a batch that carries KITTI 2015 ground truth (kitti2015_*
  keys with valid pixels): the supervised D1 (L1 of disparity), flow (robust EPE) and D2 (L1 of
  the next frame's disparity) of the post-processed target outputs over the scales, against the
  ground truth at its own resolution with kitti2015_K; ``total`` = the self-supervised total,
  ``sup_disparity`` (D1 + D2) and ``sup_flow``, each balanced to the largest of the three (the
  reference's dynamic weighting). Batches without ground truth (KITTI raw) get the
  self-supervised total alone. (The released fine-tuning loss cannot run: spec §3.)

Keys under ``stats/`` are unweighted diagnostics, not parts of ``total``.
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import torch

from geometry import invert_transform, scene_flow_to_optical_flow
from network.sceneflow import (MIN_DEPTH, REFERENCE_BASELINE, MonoSceneFlowNet, disparity_to_depth_sf,
                               level_intrinsics, post_process, resize_to)

from .base import Algorithm, Predictions, register_model
from .losses import balance, disparity_term, scene_flow_terms, supervised_terms

__all__ = ["MonoSceneFlow", "KITTI2015_GT_KEYS", "REFERENCE_BASELINE", "sequence_layout", "stereo_baseline"]

KITTI2015_GT_KEYS = ("kitti2015_disp0", "kitti2015_disp1", "kitti2015_flow", "kitti2015_flow_valid", "kitti2015_K")


def sequence_layout(frame_ids: Sequence[int]) -> Dict:
    """Sorting of a sample's frames: {"order": indices into frame_ids by increasing offset,
    "frame_ids": the sorted offsets, "target_step": index of offset 0 among the centre frames}."""
    ids = [int(f) for f in frame_ids]
    if len(set(ids)) != len(ids):
        raise ValueError(f"data.frame_ids: mono_sceneflow needs distinct frame offsets, got {ids}")
    order = sorted(range(len(ids)), key=lambda i: ids[i])
    sorted_ids = [ids[i] for i in order]
    if 0 not in sorted_ids:
        raise ValueError(f"data.frame_ids: the target frame (offset 0) is missing from {ids}")
    position = sorted_ids.index(0)
    if len(ids) < 3 or position in (0, len(ids) - 1):
        raise ValueError(f"data.frame_ids: mono_sceneflow runs on triplets (t-1, t, t+1), so the target (offset 0) "
                         f"needs a frame before and after it; got {ids} (the reference uses [-3, -2, -1, 0, 1])")
    return {"order": order, "frame_ids": sorted_ids, "target_step": position - 1}


def _frame_ids(batch: Dict) -> List[int]:
    ids = batch["frame_ids"]
    if isinstance(ids, torch.Tensor):
        if ids.dim() == 2:
            if ids.shape[0] > 1 and not bool((ids == ids[:1]).all()):
                raise ValueError(f"batch['frame_ids']: the items of a batch have different frame_ids: {ids.tolist()}")
            ids = ids[0]
        return [int(f) for f in ids.tolist()]
    return [int(f) for f in ids]


def stereo_baseline(batch: Dict) -> torch.Tensor:
    """[B] metres: the x translation from camera 0 to camera 1 of batch["extrinsics"] (T_rig_cam),
    or REFERENCE_BASELINE for a single camera."""
    extrinsics = batch["extrinsics"]
    b, n = extrinsics.shape[:2]
    if n < 2:
        return torch.full((b,), REFERENCE_BASELINE, dtype=batch["K"].dtype, device=extrinsics.device)
    T_left_right = invert_transform(extrinsics[:, 0]) @ extrinsics[:, 1]
    baseline = T_left_right[:, 0, 3]
    if not bool((baseline > 0).all()):
        raise ValueError(f"batch['extrinsics']: camera 1 must be to the right of camera 0 (a stereo pair [left, "
                         f"right] with a positive x translation), got x translations {baseline.tolist()} m")
    return baseline


def _stack_steps(per_step: Sequence[Sequence[torch.Tensor]], steps: Sequence[int], scale: int) -> torch.Tensor:
    """The maps of ``steps`` at ``scale``, step-major along the batch: [len(steps) * B, C, h, w]."""
    return torch.cat([per_step[i][scale] for i in steps])


@register_model("mono_sceneflow")
class MonoSceneFlow(Algorithm):
    """model.type mono_sceneflow (module docstring)."""

    network_names = ("sceneflow_net",)

    def __init__(self, cfg):
        super().__init__(cfg)
        m = cfg.model
        self.sceneflow_net = MonoSceneFlowNet(
            search_range=m.search_range, output_level=m.output_level, max_disparity=m.max_disparity,
            padding_mode=m.conv_padding_mode, unscaled_state_flow=m.reference_unscaled_state_flow,
            shared_cell_state=m.reference_shared_cell_state, frozen_validity_gate=m.reference_frozen_validity_gate,
            disparity_layer_norm=m.calculate_disparity_scale)
        weights = list(cfg.loss.scale_weights)
        if len(weights) < self.sceneflow_net.num_scales:
            raise ValueError(f"loss.scale_weights has {len(weights)} entries but model.output_level="
                             f"{m.output_level} gives {self.sceneflow_net.num_scales} scales: give one weight per scale")
        self.scale_weights = weights[:self.sceneflow_net.num_scales]
        self.current_epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.current_epoch = int(epoch)

    # -------------------------------------------------------------------------------- forward
    def _convention(self) -> str:
        return self.cfg.data.intrinsics_convention

    @staticmethod
    def has_ground_truth(batch: Dict) -> bool:
        return all(key in batch for key in KITTI2015_GT_KEYS)

    def _wants_post_processing(self, batch: Dict) -> bool:
        if self.training:
            return bool(self.cfg.training.finetuning) and self.has_ground_truth(batch)
        return bool(self.cfg.eval.flip_post_process) or (bool(self.cfg.training.finetuning)
                                                         and self.has_ground_truth(batch))

    def right_disparity(self, images: torch.Tensor, K_right: torch.Tensor, baseline: torch.Tensor) -> List:
        """The right view's disparity (per centre frame and scale) from the flipped right sequence
        [B, T, 3, H, W], without gradient: it only decides the stereo occlusion masks."""
        with torch.no_grad():
            return self.sceneflow_net.forward_flipped(images, K_right, baseline, self._convention())["disp"]

    def forward(self, batch: Dict) -> Dict:
        layout = sequence_layout(_frame_ids(batch))
        images = batch["image_aug"] if "image_aug" in batch else batch["image"]
        if images.dim() != 6:
            raise ValueError(f"batch['image'] must be [B, T, N, 3, H, W], got {tuple(images.shape)}")
        images = images[:, layout["order"]]
        K = batch["K"]
        baseline = stereo_baseline(batch)
        left = self.sceneflow_net(images[:, :, 0], K[:, 0], baseline)
        out = {"left": left, "frame_ids": layout["frame_ids"], "target_step": layout["target_step"],
               "baseline": baseline}
        if self.training and images.shape[2] >= 2:
            out["right_disp"] = self.right_disparity(images[:, :, 1], K[:, 1], baseline)
        if self._wants_post_processing(batch):
            flipped = self.sceneflow_net.forward_flipped(images[:, :, 0], K[:, 0], baseline, self._convention())
            step = layout["target_step"]
            out["pp"] = {key: [post_process(a, b) for a, b in zip(left[key][step], flipped[key][step])]
                         for key in ("sf_f", "sf_b", "disp")}
        return out

    # -------------------------------------------------------------------------------- losses
    def self_supervised_losses(self, batch: Dict, outputs: Dict) -> Dict[str, torch.Tensor]:
        """The disparity and scene flow terms, summed over the scales with their weights (unbalanced),
        plus diagnostics."""
        if batch["image"].shape[2] < 2:
            raise ValueError("mono_sceneflow losses need the stereo pair: batch['image'] has a single camera "
                             "(N=1); monocular batches are for inference only")
        if self.cfg.model.calculate_disparity_scale:
            raise NotImplementedError("model.calculate_disparity_scale: the stereo least-squares disparity scale of "
                                      "the loss (training in the wild) is not implemented; the network's layer "
                                      "normalisation of the disparity is, for inference with such weights")
        layout = sequence_layout(_frame_ids(batch))
        images = batch["image"][:, layout["order"]]           # un-jittered, sorted
        steps = images.shape[1] - 2
        if steps < 2:
            raise ValueError(f"data.frame_ids {layout['frame_ids']}: the scene flow loss pairs consecutive centre "
                             f"frames, so it needs at least 4 frames (the reference trains on 5)")
        left, baseline = outputs["left"], outputs["baseline"]
        right_disp = outputs.get("right_disp")
        if right_disp is None:                                  # evaluation mode: computed on demand
            net_images = batch["image_aug"] if "image_aug" in batch else batch["image"]
            right_disp = self.right_disparity(net_images[:, layout["order"], 1], batch["K"][:, 1], baseline)
        loss_cfg = self.cfg.loss
        b = images.shape[0]
        full_hw = images.shape[-2:]
        centre = list(range(steps))
        src, tgt = centre[:-1], centre[1:]
        detach = self.training and self.current_epoch < self.cfg.training.detach_disp_epochs
        census_floor = False     # the reference's census values: they set the balancing weights
        disparity_sum = scene_flow_sum = 0.0
        stats: Dict[str, torch.Tensor] = {}
        for s, weight in enumerate(self.scale_weights):
            size = left["disp"][0][s].shape[-2:]
            w = size[1]
            image_l = resize_to(images[:, 1:-1, 0].transpose(0, 1).reshape(steps * b, *images.shape[-3:]), size)
            image_r = resize_to(images[:, 1:-1, 1].transpose(0, 1).reshape(steps * b, *images.shape[-3:]), size)
            disp = _stack_steps(left["disp"], centre, s)                        # [steps * B, 1, h, w]
            disp_right = _stack_steps(right_disp, centre, s)
            census, smooth, visible = disparity_term(image_l, image_r, disp * w, disp_right * w, disp,
                                                     loss_cfg.sf_edge_weight, census_floor)
            disparity_sum = disparity_sum + weight * (census + loss_cfg.sf_disp_smooth_coeff * smooth / 2 ** s)

            pair = len(src) * b
            disp_sf = disp.detach() if detach else disp
            K_s = level_intrinsics(batch["K"][:, 0], full_hw, size).repeat(len(src), 1, 1)
            terms = scene_flow_terms(
                _stack_steps(left["sf_f"], src, s), _stack_steps(left["sf_b"], tgt, s),
                disp_sf[:pair] * w, disp_sf[b:] * w, visible[:pair], visible[b:], K_s, baseline.repeat(len(src)),
                image_l[:pair], image_l[b:], loss_cfg.sf_edge_weight, census_floor)
            scene_flow_sum = scene_flow_sum + weight * (terms["image"] + loss_cfg.sf_pts_coeff * terms["points"]
                                                        + loss_cfg.sf_smooth_coeff * terms["smooth"] / 2 ** s)
            for name, value in (("census_disparity", census), ("census_sf", terms["image"]),
                                ("points", terms["points"]), ("smooth_sf", terms["smooth"])):
                stats[name] = stats.get(name, 0.0) + value.detach()   # summed over scales, unweighted
        out = {"disparity": disparity_sum, "scene_flow": scene_flow_sum}
        out.update({f"stats/{k}": v for k, v in stats.items()})
        return out

    def supervised_losses(self, batch: Dict, outputs: Dict):
        """(D1 + D2, flow) summed over the scales with their weights, on the post-processed target
        outputs; None when the batch carries no valid ground truth."""
        pp = outputs.get("pp")
        if pp is None:
            raise ValueError("the supervised fine-tuning loss needs the post-processed outputs: run forward with "
                             "training.finetuning and a batch carrying the kitti2015_* ground truth")
        disp_loss = flow_loss = 0.0
        found = False
        for s, weight in enumerate(self.scale_weights):
            terms = supervised_terms(pp["disp"][s], pp["sf_f"][s], batch["kitti2015_K"], outputs["baseline"],
                                     batch["kitti2015_disp0"], batch["kitti2015_disp1"], batch["kitti2015_flow"],
                                     batch["kitti2015_flow_valid"])
            if terms is None:
                return None
            found = True
            disp_loss = disp_loss + weight * (terms["d1"] + terms["d2"])
            flow_loss = flow_loss + weight * terms["flow"]
        return (disp_loss, flow_loss) if found else None

    def compute_losses(self, batch: Dict, outputs: Dict) -> Dict[str, torch.Tensor]:
        self_sup = self.self_supervised_losses(batch, outputs)
        scene_flow, disparity = balance([self_sup["scene_flow"], self_sup["disparity"]])
        stats = {k: v for k, v in self_sup.items() if k.startswith("stats/")}
        stats["stats/disparity_raw"] = self_sup["disparity"].detach()
        stats["stats/scene_flow_raw"] = self_sup["scene_flow"].detach()
        supervised = None
        if self.cfg.training.finetuning and self.has_ground_truth(batch) and "pp" in outputs:
            supervised = self.supervised_losses(batch, outputs)
        if supervised is None:
            losses = {"disparity": disparity, "scene_flow": scene_flow}
            losses["total"] = disparity + scene_flow
        else:
            self_total = disparity + scene_flow
            self_total, sup_disp, sup_flow = balance([self_total, supervised[0], supervised[1]])
            losses = {"self_supervised": self_total, "sup_disparity": sup_disp, "sup_flow": sup_flow}
            losses["total"] = self_total + sup_disp + sup_flow
            stats["stats/sup_disparity_raw"] = supervised[0].detach()
            stats["stats/sup_flow_raw"] = supervised[1].detach()
        losses.update(stats)
        return losses

    # -------------------------------------------------------------------------------- predictions
    def target_outputs(self, outputs: Dict) -> Dict[str, torch.Tensor]:
        """The target frame's full-resolution disp (normalised), sf_f and sf_b: post-processed when
        evaluating with the flipped pass, else the plain pass."""
        if "pp" in outputs and not self.training:
            return {key: outputs["pp"][key][0] for key in ("disp", "sf_f", "sf_b")}
        step = outputs["target_step"]
        return {key: outputs["left"][key][step][0] for key in ("disp", "sf_f", "sf_b")}

    def predict(self, batch: Dict, outputs: Dict) -> Predictions:
        target = self.target_outputs(outputs)
        K = batch["K"][:, 0]
        baseline = outputs["baseline"]
        disp_px = target["disp"] * target["disp"].shape[-1]
        depth = disparity_to_depth_sf(disp_px, K, baseline)
        sf_f, sf_b = target["sf_f"], target["sf_b"]
        flow = scene_flow_to_optical_flow(depth, sf_f, K)
        # KITTI's disp_1: the disparity the point of each target pixel has at t+1; the depth is
        # kept off zero (a point moving onto the camera plane) so that no inf reaches the writers.
        depth_next = (depth + sf_f[:, 2:3]).clamp(min=MIN_DEPTH)
        disp_next = K[:, 0, 0].reshape(-1, 1, 1, 1) * baseline.reshape(-1, 1, 1, 1) / depth_next
        return Predictions(
            depth=depth[:, None],
            poses={},
            scene_flow={"fwd": sf_f[:, None], "bwd": sf_b[:, None]},
            extras={"disparity": disp_px[:, None], "disparity_next": disp_next[:, None], "optical_flow": flow[:, None]},
        )

