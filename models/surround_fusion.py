"""VFDepth: surround-view depth with volumetric feature fusion, ``model.type: surround_depth`` with
``model.depth_model: fusion`` and/or ``model.pose_model: fusion`` (spec/vfdepth.md §3-§4).

Networks (network/fusion_nets.py):

* ``depth_net`` (:class:`network.FusedDepthNet`): the target frame of all cameras -> one voxel
  volume around the rig -> rendered back into every camera -> sigmoid disparity at the input size
  -> depth ``1 / (1/max + (1/min − 1/max)·σ) · fx / focal_length_scale`` (models/depth_utils.py).
* ``pose_net`` (:class:`network.FusedPoseNet`): for each context offset f the frame pair in
  temporal order ([I_f, I_0] for f < 0, [I_0, I_f] for f > 0; the colour-jittered images) of all
  cameras -> one canonical motion T for the rig (``Trans(t)·R(axis_angle)``, inverted for f < 0).
  As in the reference, T is expressed in camera 0's frame; camera c's motion is then
  ``T_c = E_c⁻¹ E_0 T E_0⁻¹ E_c`` (E = T_rig_cam), so every camera moves with one rigid rig.
  ``poses[f][b, c]`` is ``T_c(t+f)_c(t)``, the convention of models.base.Predictions.

Either may be ``fsm`` instead (the per-camera networks of models/surround_baseline.py), so the
four combinations of the paper's ablations can be trained.

Losses: those of the baseline (temporal with minimum reprojection and auto-masking, spatial and
spatio-temporal between neighbouring cameras, intensity alignment, edge-aware smoothness; see
models/surround_baseline.py), and with ``training.aug_depth`` the depth-synthesis terms
(models/depth_synthesis.py): during training a random rotation of the rig (angles drawn from
``training.aug_angle``, in degrees) gives novel cameras; their depth is rendered from the *same*
volume and must agree with the depth the real cameras imply there (``depth_consistency`` ×
loss.depth_con_coeff) and be smooth (``depth_smoothness`` × loss.depth_sm_coeff).
"""
from __future__ import annotations

from typing import Dict, Sequence

import torch

from geometry import compose, invert_transform, pose_from_axis_angle_translation
from network.fusion_nets import FusedDepthNet, FusedPoseNet
from network.mono_nets import MonoDepthNet, MonoPoseNet
from network.volumetric_fusion import VoxelGrid

from .base import Algorithm, register_model
from .depth_utils import focal_scaled_depth
from .surround_baseline import SurroundBaseline, batch_frame_ids, frame_index, temporal_pairs


def canonical_to_cameras(T_canonical: torch.Tensor, extrinsics: torch.Tensor) -> torch.Tensor:
    """The rig motion T [B, 4, 4], expressed in camera 0's frame, as each camera's motion
    T_c = E_c⁻¹ E_0 T E_0⁻¹ E_c -> [B, N, 4, 4] (extrinsics [B, N, 4, 4] T_rig_cam)."""
    E0 = extrinsics[:, :1]
    T_rig = compose(E0, T_canonical[:, None], invert_transform(E0))        # the motion in the rig frame
    return compose(invert_transform(extrinsics), T_rig, extrinsics)


class SurroundFusion(SurroundBaseline):
    """VFDepth with fused depth and/or pose networks; see the module docstring.

    forward(batch) -> {"disp": {0: [B, N, 1, H, W]}, "depth": {0: ...}, "poses": {f: [B, N, 4, 4]},
    "frame_ids": [...], and with aug_depth in training "aug": {"E": [B, N, 4, 4], "disp": ...,
    "depth": ...}}.
    """

    def __init__(self, cfg):
        Algorithm.__init__(self, cfg)
        model, training = cfg.model, cfg.training
        self.scales = sorted({int(s) for s in training.scales})
        self.fused_depth = model.depth_model == "fusion"
        self.fused_pose = model.pose_model == "fusion"
        grid = VoxelGrid.from_config(model)
        convention = cfg.data.intrinsics_convention
        if self.fused_depth:
            if self.scales != [0]:
                raise ValueError(f"training.scales: the fusion depth decoder predicts full resolution only; "
                                 f"use [0], got {list(training.scales)}")
            if len(model.voxel_pre_dim) != 1:
                raise ValueError(f"model.voxel_pre_dim: one width is supported, got {list(model.voxel_pre_dim)}")
            self.depth_net = FusedDepthNet(model.num_layers, model.weights_init, model.fusion_level,
                                           model.fusion_feat_in_dim, grid, model.voxel_pre_dim[0], model.proj_d_bins,
                                           model.proj_d_str, model.proj_d_end, model.reference_max_two_overlap,
                                           convention)
        else:
            self.depth_net = MonoDepthNet(model.num_layers, model.weights_init, scales=self.scales, use_skips=True)
        if self.fused_pose:
            self.pose_net = FusedPoseNet(model.num_layers, model.weights_init, model.fusion_level,
                                         model.fusion_feat_in_dim, grid, convention)
        else:
            self.pose_net = MonoPoseNet(model.num_layers, model.weights_init)
        for net in (self.depth_net, self.pose_net):
            if hasattr(net, "recompute"):
                net.recompute = bool(training.activation_checkpointing)

    # -------------------------------------------------------------------------------- depth
    def depth_from_disp(self, disp: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
        t = self.cfg.training
        return focal_scaled_depth(disp, K, t.min_depth, t.max_depth, t.focal_length_scale)

    def fused_depth_outputs(self, images: torch.Tensor, batch: Dict) -> Dict:
        disp, volume = self.depth_net(images, batch["K"], batch["extrinsics"], batch.get("mask"))
        return {"disp": {0: disp}, "depth": {0: self.depth_from_disp(disp, batch["K"])}, "volume": volume}

    def render_depth(self, volume: torch.Tensor, K: torch.Tensor, extrinsics: torch.Tensor,
                     image_hw: Sequence[int], use_cache: bool = False):
        """(disp, depth) [B, N', 1, H, W] of any cameras (K at image_hw, T_rig_cam extrinsics)
        looking into a fused volume: the novel views of depth synthesis."""
        disp = self.depth_net.render(volume, K, extrinsics, image_hw, self.depth_net.feature_size(image_hw), use_cache)
        return disp, self.depth_from_disp(disp, K)

    # -------------------------------------------------------------------------------- poses
    def fused_poses(self, images: torch.Tensor, batch: Dict, frame_ids: Sequence[int]) -> Dict[int, torch.Tensor]:
        """{f: T_c(t+f)_c(t) [B, N, 4, 4]} from one canonical motion per frame pair (all pairs in
        one pose-net pass)."""
        context, firsts, seconds = temporal_pairs(images, frame_ids)
        if not context:
            return {}
        b, k = images.shape[0], len(context)
        K, E = batch["K"].repeat(k, 1, 1, 1), batch["extrinsics"].repeat(k, 1, 1, 1)
        masks = batch.get("mask")
        masks = masks.repeat(k, 1, 1, 1, 1) if masks is not None else None
        axis_angle, translation = self.pose_net(firsts, seconds, K, E, masks)
        poses = {}
        for i, f in enumerate(context):
            T = pose_from_axis_angle_translation(axis_angle[i * b:(i + 1) * b], translation[i * b:(i + 1) * b],
                                                 invert=f < 0)
            poses[f] = canonical_to_cameras(T, batch["extrinsics"])
        return poses

    # -------------------------------------------------------------------------------- forward
    def forward(self, batch: Dict) -> Dict:
        frame_ids = batch_frame_ids(batch)
        images = self._network_input(batch)
        target = images[:, frame_index(frame_ids, 0)]
        if self.fused_depth:
            outputs = self.fused_depth_outputs(target, batch)
        else:
            disps, depths = self.predict_depth(target, batch["K"])
            outputs = {"disp": disps, "depth": depths}
        outputs["poses"] = (self.fused_poses(images, batch, frame_ids) if self.fused_pose
                            else self.predict_poses(images, frame_ids))
        outputs["frame_ids"] = frame_ids
        if self.training and self.cfg.training.aug_depth and self.fused_depth:
            outputs["aug"] = self.novel_view_outputs(outputs["volume"], batch, target.shape[-2:])
        return outputs

    def novel_view_outputs(self, volume: torch.Tensor, batch: Dict, image_hw: Sequence[int]) -> Dict:
        """Depth of the cameras of a randomly rotated rig (one rotation per sample)."""
        from .depth_synthesis import augment_extrinsics, random_view_rotation
        t = self.cfg.training
        E = batch["extrinsics"]
        R = random_view_rotation(E.shape[0], t.aug_angle, reference_radians=t.reference_aug_angle_radians,
                                 device=E.device, dtype=E.dtype)
        E_aug = augment_extrinsics(E, R)
        disp, depth = self.render_depth(volume, batch["K"], E_aug, image_hw)
        return {"E": E_aug, "disp": disp, "depth": depth}

    # -------------------------------------------------------------------------------- losses
    def compute_losses(self, batch: Dict, outputs: Dict) -> Dict[str, torch.Tensor]:
        losses = super().compute_losses(batch, outputs)
        if "aug" in outputs:
            del losses["total"]
            losses.update(self.synthesis_losses(batch, outputs))
            losses["total"] = sum(losses.values())
        return losses

    def synthesis_losses(self, batch: Dict, outputs: Dict) -> Dict[str, torch.Tensor]:
        """The weighted depth-synthesis terms: each augmented camera against the depth that its
        neighbours (data.rel_cam_list) and the real camera itself imply in its view."""
        from .depth_synthesis import rig_synthesis_targets, synthesis_losses
        t, loss_cfg = self.cfg.training, self.cfg.loss
        aug = outputs["aug"]
        targets, valid = rig_synthesis_targets(outputs["depth"][0], batch["K"], batch["extrinsics"], batch["mask"],
                                               aug["depth"], aug["E"], self.cfg.data.rel_cam_list,
                                               t.min_depth, t.max_depth)
        terms = synthesis_losses(aug["depth"], targets, valid, aug["disp"])
        return {"depth_consistency": loss_cfg.depth_con_coeff * terms["depth_consistency"],
                "depth_smoothness": loss_cfg.depth_sm_coeff * terms["depth_smoothness"]}


# ---------------------------------------------------------------------------------------- registry
@register_model("surround_depth")
def build_surround_depth(cfg) -> Algorithm:
    """model.type surround_depth: the FSM-style baseline when depth_model and pose_model are both
    ``fsm``, VFDepth's fusion model otherwise."""
    depth_model, pose_model = cfg.model.depth_model, cfg.model.pose_model
    if depth_model == "fsm" and pose_model == "fsm":
        return SurroundBaseline(cfg)
    return SurroundFusion(cfg)
