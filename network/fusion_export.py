"""VFDepth's fusion networks for one fixed rig calibration, written so that they trace to ONNX.

The training path (network/volumetric_fusion.py) finds the visible (camera, voxel) pairs of each
calibration with a data-dependent ``nonzero``, caches them per calibration and sums them with
``F.embedding_bag``; none of that has an ONNX form, and a trace would freeze the example's pairs
and batch size without saying so. A deployed rig has one calibration, so here the calibration is
fixed when the module is built:

* the pairs, bilinear taps, nearest pixels, depths and camera groups of that calibration are
  computed once by the training path's own :func:`compute_backprojection` and kept as buffers (they
  become constants of the graph);
* per batch item only the self-occlusion masks can change which pairs are *valid*, so validity,
  the per-voxel camera counts and the fusion coefficients are computed in the graph from the
  ``masks`` input, with Gather and ScatterND(reduction="add") over the fixed pairs;
* the view grid of the projection back into the cameras is a constant of that calibration too;
  it is sampled with a 5-D ``grid_sample`` (ONNX GridSample, opset 20).

Every batch item shares the rig, so the batch axis stays free. :class:`FixedRigDepthNet` and
:class:`FixedRigPoseNet` reuse the modules (and so the weights) of a :class:`FusedDepthNet` /
:class:`FusedPoseNet` and compute what their ``forward`` computes for that calibration at every
batch size (tests/test_export.py holds them together, in PyTorch and in onnxruntime). Another
calibration, camera count or image size needs new modules (a new export).
"""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .blocks import pack_cameras
from .fusion_nets import FusedDepthNet, FusedPoseNet
from .volumetric_fusion import (LEAKY_SLOPE, MASK_THRESHOLD, REFERENCE_SIX_CAMERA_GROUPS, VoxelGrid, camera_groups,
                                compute_backprojection, feature_intrinsics)

GRID_SAMPLE_OPSET = 20   # first ONNX opset whose GridSample takes a 5-D volume


class _SumRows(torch.autograd.Function):
    """``out[index[e]] += values[e]`` into ``num_rows`` zero rows: values [E, ...], index [E] -> [num_rows, ...].

    PyTorch's own exports of ``index_add``/``index_put(accumulate=True)`` lose the repeated indices
    (every voxel seen by two cameras), and ``scatter_add`` needs its index expanded to the full
    [E, B, C] shape; ScatterND with reduction "add" (opset 16) takes one index per row, and
    onnxruntime runs it several times faster than ScatterElements here.
    """

    @staticmethod
    def forward(ctx, values: torch.Tensor, index: torch.Tensor, num_rows: int) -> torch.Tensor:
        ctx.save_for_backward(index)
        return values.new_zeros((num_rows,) + tuple(values.shape[1:])).index_add_(0, index, values)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (index,) = ctx.saved_tensors
        return grad.index_select(0, index), None, None

    @staticmethod
    def symbolic(g, values, index, num_rows: int):
        # Output shape [num_rows, *values.shape[1:]]: the trailing (batch) sizes are only known at run time.
        shape = g.op("Shape", values)
        tail = g.op("Slice", shape, g.op("Constant", value_t=torch.tensor([1])),
                    g.op("Constant", value_t=torch.tensor([torch.iinfo(torch.int64).max])))
        out_shape = g.op("Concat", g.op("Constant", value_t=torch.tensor([int(num_rows)])), tail, axis_i=0)
        zeros = g.op("ConstantOfShape", out_shape, value_t=torch.zeros(1, dtype=torch.float32))
        rows = g.op("Unsqueeze", index, g.op("Constant", value_t=torch.tensor([1])))
        return g.op("ScatterND", zeros, rows, values, reduction_s="add")


def sum_rows(values: torch.Tensor, index: torch.Tensor, num_rows: int) -> torch.Tensor:
    """Sum of the rows of values [E, ...] with the same index [E] (float32) -> [num_rows, ...]."""
    return _SumRows.apply(values, index, int(num_rows))


class FixedBackProjection(nn.Module):
    """The visible (camera, voxel) pairs of one calibration as buffers, and the per-batch sums
    over them. Layouts are entries- or voxels-first with the batch second ([E, B, ...],
    [V, B, ...]), so every gather and sum runs along axis 0 whatever the batch size.

    Args:
        grid: the network's voxel grid.
        K_feat: [N, 3, 3] intrinsics at the feature size; extrinsics: [N, 4, 4] T_rig_cam.
        feature_hw: the feature map size; groups: [N] overlap group of each camera.
    """

    def __init__(self, grid: VoxelGrid, K_feat: torch.Tensor, extrinsics: torch.Tensor,
                 feature_hw: Sequence[int], groups: torch.Tensor):
        super().__init__()
        bp = compute_backprojection(grid, K_feat, extrinsics, feature_hw, groups)
        self.num_voxels = grid.num_voxels
        self.num_pixels = int(K_feat.shape[0]) * int(feature_hw[0]) * int(feature_hw[1])
        self.feature_hw = (int(feature_hw[0]), int(feature_hw[1]))
        self.register_buffer("voxel", bp.voxel)
        self.register_buffer("taps", bp.taps)
        self.register_buffer("tap_weights", bp.tap_weights)
        self.register_buffer("nearest", bp.nearest)
        self.register_buffer("depth", bp.depth)
        self.register_buffer("in_group1", (bp.group == 1).float())

    @property
    def num_entries(self) -> int:
        return int(self.voxel.shape[0])

    def valid(self, masks: torch.Tensor) -> torch.Tensor:
        """[E, B] float {0, 1}: the pairs whose camera's mask (masks [B, N, 1, H, W], resized
        bilinearly to the feature map, as valid_entries does) is above 0.5 at the nearest pixel."""
        small = F.interpolate(masks.flatten(0, 1).float(), size=self.feature_hw, mode="bilinear", align_corners=False)
        per_pixel = small.reshape(-1, self.num_pixels).t()                  # [P, B]
        return (per_pixel.index_select(0, self.nearest) > MASK_THRESHOLD).float()

    def per_voxel(self, values: torch.Tensor) -> torch.Tensor:
        """Per-entry values [E, ...] summed into voxels -> [V, ...]."""
        return sum_rows(values, self.voxel, self.num_voxels)

    def at_entries(self, per_voxel: torch.Tensor) -> torch.Tensor:
        """Per-voxel values [V, ...] read at each entry's voxel -> [E, ...]."""
        return per_voxel.index_select(0, self.voxel)

    def sample(self, pixels: torch.Tensor) -> torch.Tensor:
        """Bilinear samples of the pixel table pixels [P, B, C] at every entry -> [E, B, C]."""
        out = None
        for t in range(self.taps.shape[1]):    # four taps: one [E, B, C] temporary at a time
            term = pixels.index_select(0, self.taps[:, t]) * self.tap_weights[:, t, None, None]
            out = term if out is None else out + term
        return out


def pixel_table(features: torch.Tensor) -> torch.Tensor:
    """features [B, N, C, h, w] -> [N·h·w, B, C], the pixel order of the back-projection's indices."""
    return features.permute(1, 3, 4, 0, 2).flatten(0, 2)


def fixed_groups(extrinsics: torch.Tensor, reference_groups: bool) -> torch.Tensor:
    """[N] overlap groups of a rig, as batch_backprojection chooses them."""
    n = extrinsics.shape[0]
    if not reference_groups:
        return camera_groups(extrinsics[None])[0]
    if n != len(REFERENCE_SIX_CAMERA_GROUPS):
        raise ValueError(f"model.reference_max_two_overlap: the reference's overlap groups are hard-wired to "
                         f"six cameras in the order F, FL, FR, RL, RR, R; this rig has {n} cameras")
    return torch.tensor(REFERENCE_SIX_CAMERA_GROUPS, device=extrinsics.device)


def fusion_feature_size(image_hw: Sequence[int], level: int) -> Tuple[int, int]:
    """Size of the fusion-level feature map of the ResNet encoder for an image of image_hw (as
    FusedDepthNet.feature_size: conv1 stride 2, then the max pool or a stride-2 stage per level)."""
    h, w = (int(v) for v in image_hw)
    for _ in range(int(level) + 1):
        h, w = (h + 1) // 2, (w + 1) // 2
    return h, w


def _check_feature_size(features: torch.Tensor, feature_hw: Tuple[int, int]) -> None:
    """The fixed back-projection indexes pixels of a feature map of exactly feature_hw."""
    if tuple(features.shape[-2:]) != tuple(feature_hw):
        raise ValueError(f"the encoder made {tuple(features.shape[-2:])} feature maps, the rig's back-projection "
                         f"was built for {tuple(feature_hw)}")


def _check_rig(K: torch.Tensor, extrinsics: torch.Tensor) -> None:
    n = K.shape[0]
    if K.shape != (n, 3, 3) or extrinsics.shape != (n, 4, 4) or n < 1:
        raise ValueError(f"a rig needs K [N, 3, 3] and extrinsics [N, 4, 4] for the same N >= 1, "
                         f"got {tuple(K.shape)} and {tuple(extrinsics.shape)}")


class FixedRigDepthNet(nn.Module):
    """A :class:`FusedDepthNet` for one rig: (images [B, N, 3, H, W], masks [B, N, 1, H, W]) ->
    sigmoid disparity [B, N, 1, H, W], equal to ``net(images, K, extrinsics, masks)[0]`` with the
    rig's K [N, 3, 3] (at H x W) and extrinsics [N, 4, 4] (T_rig_cam) for every batch item.
    Shares the modules (weights) of ``net``."""

    def __init__(self, net: FusedDepthNet, K: torch.Tensor, extrinsics: torch.Tensor, image_hw: Sequence[int]):
        super().__init__()
        _check_rig(K, extrinsics)
        self.encoder, self.aggregation, self.decoder = net.encoder, net.aggregation, net.decoder
        self.fusion_net = net.fusion_net
        self.image_hw = (int(image_hw[0]), int(image_hw[1]))
        self.feature_hw = net.feature_size(self.image_hw)
        self.num_cameras = int(K.shape[0])
        K_feat = feature_intrinsics(K, self.image_hw, self.feature_hw, net.convention)
        fusion = self.fusion_net
        groups = fixed_groups(extrinsics, fusion.reference_max_two_overlap)
        self.backprojection = FixedBackProjection(fusion.grid, K_feat, extrinsics, self.feature_hw, groups)
        # The sampling grid of every feature pixel's ray points: [1, N·D, h, w, 3].
        self.register_buffer("view_grid", fusion.view_grid(K_feat[None], extrinsics[None], self.feature_hw,
                                                           use_cache=False))

    def camera_features(self, images: torch.Tensor) -> torch.Tensor:
        """[B, N, 3, H, W] -> [B, N, C, h, w] (FusedDepthNet.camera_features without its profiler
        ranges, which the tracer would record as graph nodes)."""
        self._check_input(images)
        features = self.aggregation(self.encoder(pack_cameras(images)))
        _check_feature_size(features, self.feature_hw)
        return features.unflatten(0, (-1, self.num_cameras))

    def fuse(self, features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """features [B, N, C, h, w] -> fused volume [B, voxel_dim, nz, ny, nx] (DepthVolumeFusion.fuse)."""
        fusion, bp = self.fusion_net, self.backprojection
        c = features.shape[2]
        valid = bp.valid(masks)                                                            # [E, B]
        coeff, active, overlap = self._coefficients(valid)                                 # [E, B, 3], [V, B] x2
        # As in the training path, the 1x1 convolutions are applied to the pixels before sampling.
        w_non = fusion.conv_non_overlap[0].weight[:, :, 0]
        w_ov = fusion.conv_overlap[0].weight[:, :, 0]
        w_pix = torch.cat([w_non[:, :c], w_ov[:, :c], w_ov[:, c + 1:2 * c + 1]])           # [3·64, C]
        w_depth = torch.stack([w_non[:, c], w_ov[:, c], w_ov[:, 2 * c + 1]], dim=1)        # [64, 3]
        table = pixel_table(features) @ w_pix.t()                                          # [P, B, 3·64]
        sampled = bp.sample(table).unflatten(-1, (3, fusion.voxel_dim))                    # [E, B, 3, 64]
        per_entry = (sampled * coeff[..., None]).sum(2)                                    # [E, B, 64]
        fused = bp.per_voxel(per_entry) + bp.per_voxel(coeff * bp.depth[:, None, None]) @ w_depth.t()
        bias = torch.where(overlap[..., None], fusion.conv_overlap[0].bias, fusion.conv_non_overlap[0].bias)
        fused = F.leaky_relu(fused + bias, LEAKY_SLOPE) * active[..., None].float()       # [V, B, 64]
        return fused.unflatten(0, fusion.grid.volume_shape).permute(3, 4, 0, 1, 2)

    def _coefficients(self, valid: torch.Tensor):
        """DepthVolumeFusion._coefficients with the batch as the second axis: valid [E, B] ->
        (weights of each entry in the non-overlap, group-0 and group-1 sums [E, B, 3], whether
        each voxel is fused [V, B], whether through the overlap branch [V, B])."""
        bp = self.backprojection
        in_group1 = valid * bp.in_group1[:, None]
        in_group0 = valid - in_group1
        count = bp.per_voxel(valid)
        count1 = bp.per_voxel(in_group1)
        count0 = count - count1
        single = count == 1
        if self.fusion_net.reference_max_two_overlap:
            overlap = count == 2
            c_ov0, c_ov1 = in_group0, in_group1                                            # group sums
        else:
            overlap = count >= 2
            both = bp.at_entries(((count0 > 0) & (count1 > 0)).float()) > 0
            mean_all = valid / bp.at_entries(count).clamp(min=1)
            c_ov0 = torch.where(both, in_group0 / bp.at_entries(count0).clamp(min=1), mean_all)
            c_ov1 = torch.where(both, in_group1 / bp.at_entries(count1).clamp(min=1), mean_all)
        e_single, e_overlap = bp.at_entries(single.float()), bp.at_entries(overlap.float())
        coeff = torch.stack([valid * e_single, c_ov0 * e_overlap, c_ov1 * e_overlap], dim=2)
        return coeff, single | overlap, overlap

    def render(self, volume: torch.Tensor) -> torch.Tensor:
        """volume [B, 64, nz, ny, nx] -> sigmoid disparity [B, N, 1, H, W] of the rig's cameras
        (DepthVolumeFusion.sample_views, reduce_dim, the decoder)."""
        n, d = self.num_cameras, self.fusion_net.depth_bins.numel()
        h, w = self.feature_hw
        c = self.fusion_net.voxel_dim
        # Every item shares the grid, so the items are sampled as channels of one volume: a grid
        # per item would need the batch size, which the tracer takes for a constant after the
        # scatter (a custom op) and would freeze at the example's.
        stacked = volume.reshape(1, -1, *volume.shape[2:])                                 # [1, B·C, nz, ny, nx]
        sampled = F.grid_sample(stacked, self.view_grid.to(volume.dtype), mode="bilinear", padding_mode="zeros",
                                align_corners=True)                                        # [1, B·C, N·D, h, w]
        per_camera = sampled.reshape(-1, c, n, d, h, w).transpose(1, 2).reshape(-1, c * d, h, w)
        disp = self.decoder(self.fusion_net.reduce_dim(per_camera), self.image_hw)
        return disp.unflatten(0, (-1, n))

    def forward(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        return self.render(self.fuse(self.camera_features(images), masks))

    def _check_input(self, images: torch.Tensor) -> None:
        expected = (self.num_cameras, 3) + self.image_hw
        if images.dim() != 5 or tuple(images.shape[1:]) != expected:
            raise ValueError(f"images must be [B, {', '.join(map(str, expected))}] for this rig, "
                             f"got {tuple(images.shape)}")


class FixedRigPoseNet(nn.Module):
    """A :class:`FusedPoseNet` for one rig: (first, second [B, N, 3, H, W] in temporal order,
    masks [B, N, 1, H, W]) -> (axis_angle [B, 3], translation [B, 3]), equal to
    ``net(first, second, K, extrinsics, masks)`` with the rig's K and extrinsics for every item.
    Shares the modules (weights) of ``net``."""

    def __init__(self, net: FusedPoseNet, K: torch.Tensor, extrinsics: torch.Tensor, image_hw: Sequence[int]):
        super().__init__()
        _check_rig(K, extrinsics)
        self.encoder, self.aggregation, self.pose_decoder = net.encoder, net.aggregation, net.pose_decoder
        self.fusion_net = net.fusion_net
        self.max_translation = net.max_translation
        self.image_hw = (int(image_hw[0]), int(image_hw[1]))
        self.num_cameras = int(K.shape[0])
        self.feature_hw = fusion_feature_size(self.image_hw, self.aggregation.level)
        K_feat = feature_intrinsics(K, self.image_hw, self.feature_hw, net.convention)
        # The pose volume is a plain mean over the valid cameras: the groups play no part.
        groups = torch.zeros(self.num_cameras, dtype=torch.long, device=K.device)
        self.backprojection = FixedBackProjection(self.fusion_net.grid, K_feat, extrinsics, self.feature_hw, groups)

    def fuse(self, features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """features [B, N, C, h, w] -> mean volume [B, C+1, nz, ny, nx] (PoseVolumeFusion.fuse)."""
        bp = self.backprojection
        valid = bp.valid(masks)                                                            # [E, B]
        coeff = valid / bp.at_entries(bp.per_voxel(valid)).clamp(min=1)
        mean = bp.per_voxel(bp.sample(pixel_table(features)) * coeff[..., None])         # [V, B, C]
        depth = bp.per_voxel(coeff * bp.depth[:, None])                                    # [V, B]
        fused = torch.cat([mean, depth[..., None]], dim=2)
        return fused.unflatten(0, self.fusion_net.grid.volume_shape).permute(3, 4, 0, 1, 2)

    def forward(self, first: torch.Tensor, second: torch.Tensor, masks: torch.Tensor):
        expected = (self.num_cameras, 3) + self.image_hw
        for name, x in (("first", first), ("second", second)):
            if x.dim() != 5 or tuple(x.shape[1:]) != expected:
                raise ValueError(f"{name} must be [B, {', '.join(map(str, expected))}] for this rig, "
                                 f"got {tuple(x.shape)}")
        pairs = torch.cat([pack_cameras(first), pack_cameras(second)], dim=1)
        features = self.aggregation(self.encoder(pairs))
        _check_feature_size(features, self.feature_hw)
        features = features.unflatten(0, (-1, self.num_cameras))
        # PoseVolumeFusion.bird_eye_view, with the heights folded into the channels (c·nz + z) by a
        # flatten, which keeps the batch size out of the graph.
        bev = self.fusion_net.reduce_dim(self.fuse(features, masks).flatten(1, 2))
        axis_angle, translation = self.pose_decoder(bev)
        axis_angle, translation = axis_angle.reshape(-1, 3), translation.reshape(-1, 3)
        if self.max_translation is not None:
            translation = translation.clamp(-self.max_translation, self.max_translation)
        return axis_angle, translation
