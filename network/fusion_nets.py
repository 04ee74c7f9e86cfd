"""VFDepth's fused networks (spec/vfdepth.md §3.1-§3.4): one depth network and one pose network,
each with its own ResNet encoder and volumetric fusion (network/volumetric_fusion.py).

Shapes at the DDAD configuration (B samples, N = 6 cameras, 384x640, fusion level 2 = stride 8):
encoder levels 2, 3, 4 of every camera [B·N, 128|256|512, ...] are brought to the level-2 size
(bilinear, align_corners=True), concatenated (896 channels) and reduced by a 1x1 convolution
(``conv1x1``, 896 -> 256, LeakyReLU) to [B, N, 256, 48, 80]; then

* :class:`FusedDepthNet`: fused volume [B, 64, 20, 100, 100] -> back into each camera
  [B·N, 128, 48, 80] -> :class:`FusionDepthDecoder` -> sigmoid disparity [B, N, 1, 384, 640];
* :class:`FusedPoseNet`: two frames per camera stacked on the channels (the encoder takes 6) ->
  mean-fused volume -> bird's-eye view [B, 128, 25, 25] -> the stride-2 pose decoder -> one
  (axis-angle, translation) for the whole rig.

The depth network exposes its two halves, :meth:`FusedDepthNet.volume` and
:meth:`FusedDepthNet.render`, so that depth can be rendered for cameras that do not exist
(novel-view depth synthesis): the volume does not depend on where it is looked at from.
Nothing depends on B, N, the image size or the device; what depends only on the calibration is
cached (network/volumetric_fusion.py).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.profiler import record_function   # stage names for tools/benchmark.py --profile

from .blocks import pack_cameras, unpack_cameras
from .pose_decoder import PoseDecoder
from .recompute import recomputed
from .resnet_encoder import ResnetEncoder, WeightsInit
from .volumetric_fusion import (LEAKY_SLOPE, DepthVolumeFusion, PoseVolumeFusion, VoxelGrid,
                                feature_intrinsics)

DECODER_CHANNELS = (64, 32, 16)   # the fusion depth decoder's stage widths (reference)
PROJECTED_CHANNELS = 128          # per-camera features out of the volume projection (reference)
MAX_TRANSLATION = 4.0             # metres per frame; the reference clamps the translation to ±4


class FeatureAggregation(nn.Module):
    """Encoder levels ``level``..4 -> one map at the level's size: upsample, concatenate, 1x1 conv.
    Parameter names ``conv1x1.0`` as the reference."""

    def __init__(self, num_ch_enc: Sequence[int], level: int, out_dim: int):
        super().__init__()
        self.level = int(level)
        in_ch = sum(num_ch_enc[self.level:])
        self.conv1x1 = nn.Sequential(nn.Conv2d(in_ch, int(out_dim), 1), nn.LeakyReLU(LEAKY_SLOPE, inplace=True))

    def forward(self, features: List[torch.Tensor]) -> torch.Tensor:
        base = features[self.level]
        size = base.shape[-2:]
        maps = [base] + [F.interpolate(f, size=size, mode="bilinear", align_corners=True)
                         for f in features[self.level + 1:]]
        return self.conv1x1(torch.cat(maps, dim=1))


class FusionDepthDecoder(nn.Module):
    """[B', 128, h, w] -> sigmoid disparity [B', 1, H, W]: per stage conv3x3+ELU, nearest
    upsampling (to the next size of the pyramid down to the image), conv3x3+ELU; then
    conv3x3 -> sigmoid. Names ``decoder.{0..6}.0`` as the reference."""

    def __init__(self, in_dim: int = PROJECTED_CHANNELS, channels: Sequence[int] = DECODER_CHANNELS):
        super().__init__()
        layers: List[nn.Module] = []
        prev = int(in_dim)
        for ch in channels:
            layers.append(self._block(prev, ch, nn.ELU(inplace=True)))
            layers.append(self._block(ch, ch, nn.ELU(inplace=True)))
            prev = ch
        layers.append(self._block(prev, 1, nn.Sigmoid()))
        self.decoder = nn.ModuleList(layers)
        self.num_stages = len(channels)

    @staticmethod
    def _block(in_ch: int, out_ch: int, act: nn.Module) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, padding=1, padding_mode="reflect"), act)

    def forward(self, x: torch.Tensor, image_hw: Sequence[int]) -> torch.Tensor:
        H, W = (int(v) for v in image_hw)
        h, w = x.shape[-2:]
        # Sizes between the feature map and the image, halving from the image (so that inputs
        # that are not multiples of the stride still end exactly at H x W).
        sizes = [(max(1, -(-H // 2 ** k)), max(1, -(-W // 2 ** k))) for k in range(self.num_stages - 1, -1, -1)]
        sizes[-1] = (H, W)
        for stage in range(self.num_stages):
            x = self.decoder[2 * stage](x)
            x = F.interpolate(x, size=sizes[stage], mode="nearest")
            x = self.decoder[2 * stage + 1](x)
        return self.decoder[-1](x)


class FusedDepthNet(nn.Module):
    """(images [B, N, 3, H, W], K [B, N, 3, 3] at H x W, extrinsics [B, N, 4, 4] T_rig_cam,
    masks [B, N, 1, H, W] or None) -> sigmoid disparity [B, N, 1, H, W]."""

    def __init__(self, num_layers: int = 18, weights_init: WeightsInit = True, fusion_level: int = 2,
                 feat_dim: int = 256, grid: Optional[VoxelGrid] = None, voxel_dim: int = 64,
                 proj_d_bins: int = 50, proj_d_str: float = 2.0, proj_d_end: float = 50.0,
                 reference_max_two_overlap: bool = False, convention: str = "half_pixel"):
        super().__init__()
        self.convention = convention
        self.encoder = ResnetEncoder(num_layers, weights_init)
        self.aggregation = FeatureAggregation(self.encoder.num_ch_enc, fusion_level, feat_dim)
        self.fusion_net = DepthVolumeFusion(grid or VoxelGrid((-50.0, -50.0, -15.0), (1.0, 1.0, 1.5), (100, 100, 20)),
                                            feat_dim, voxel_dim, proj_d_bins, proj_d_str, proj_d_end,
                                            PROJECTED_CHANNELS, reference_max_two_overlap)
        self.decoder = FusionDepthDecoder(PROJECTED_CHANNELS)
        self.recompute = False   # training.activation_checkpointing: recompute encoder and decoder activations

    def _encode(self, packed: torch.Tensor) -> torch.Tensor:
        return self.aggregation(self.encoder(packed))

    def camera_features(self, images: torch.Tensor) -> torch.Tensor:
        """[B, N, 3, H, W] -> aggregated features [B, N, C, h, w]."""
        b, n = images.shape[:2]
        with record_function("encoders"):
            features = recomputed(self._encode, pack_cameras(images), enabled=self.recompute, module=self.encoder)
            return unpack_cameras(features, b, n)

    def volume(self, images, K, extrinsics, masks) -> torch.Tensor:
        """The fused volume [B, 64, nz, ny, nx] of the cameras' images."""
        features = self.camera_features(images)
        K_feat = feature_intrinsics(K, images.shape[-2:], features.shape[-2:], self.convention)
        with record_function("back-projection"):
            return self.fusion_net.fuse(features, K_feat, extrinsics, masks)

    def render(self, volume: torch.Tensor, K: torch.Tensor, extrinsics: torch.Tensor, image_hw: Sequence[int],
               feature_hw: Sequence[int], use_cache: bool = True) -> torch.Tensor:
        """Sigmoid disparity [B, N', 1, H, W] of cameras (K at image_hw, extrinsics) looking into
        the volume; feature_hw is the size of the fusion-level feature map for image_hw.
        use_cache=False for one-off cameras (random novel views)."""
        b, n = K.shape[:2]
        K_feat = feature_intrinsics(K, image_hw, feature_hw, self.convention)
        with record_function("projection to images"):
            sampled = self.fusion_net.sample_views(volume, K_feat, extrinsics, feature_hw, use_cache)
        with record_function("fusion convolutions"):
            projected = self.fusion_net.reduce_dim(sampled.flatten(1, 2))
        with record_function("decoder"):
            disparity = recomputed(self.decoder, projected, tuple(image_hw), enabled=self.recompute)
            return unpack_cameras(disparity, b, n)

    def feature_size(self, image_hw: Sequence[int]) -> Tuple[int, int]:
        """Size of the fusion-level feature map of a ResNet for an image of image_hw."""
        h, w = (int(v) for v in image_hw)
        for _ in range(self.aggregation.level + 1):   # conv1 stride 2, then maxpool / stride-2 stages
            h, w = (h + 1) // 2, (w + 1) // 2
        return h, w

    def forward(self, images, K, extrinsics, masks=None) -> Tuple[torch.Tensor, torch.Tensor]:
        """-> (sigmoid disparity [B, N, 1, H, W], volume [B, 64, nz, ny, nx])."""
        image_hw = images.shape[-2:]
        volume = self.volume(images, K, extrinsics, masks)
        return self.render(volume, K, extrinsics, image_hw, self.feature_size(image_hw)), volume


class FusedPoseNet(nn.Module):
    """(first [B, N, 3, H, W], second [B, N, 3, H, W] in temporal order, K, extrinsics, masks)
    -> (axis_angle [B, 3], translation [B, 3]) of one canonical rig motion (see models/surround_fusion.py
    for its frame)."""

    def __init__(self, num_layers: int = 18, weights_init: WeightsInit = True, fusion_level: int = 2,
                 feat_dim: int = 256, grid: Optional[VoxelGrid] = None, convention: str = "half_pixel",
                 max_translation: Optional[float] = MAX_TRANSLATION):
        super().__init__()
        self.convention = convention
        self.encoder = ResnetEncoder(num_layers, weights_init, num_input_images=2)
        self.aggregation = FeatureAggregation(self.encoder.num_ch_enc, fusion_level, feat_dim)
        self.fusion_net = PoseVolumeFusion(grid or VoxelGrid((-50.0, -50.0, -15.0), (1.0, 1.0, 1.5), (100, 100, 20)),
                                           feat_dim, PROJECTED_CHANNELS)
        self.pose_decoder = PoseDecoder(PROJECTED_CHANNELS, num_input_features=1, num_frames_to_predict_for=1, stride=2)
        self.max_translation = max_translation
        self.recompute = False   # training.activation_checkpointing: recompute the encoder's activations

    def _encode(self, pairs: torch.Tensor) -> torch.Tensor:
        return self.aggregation(self.encoder(pairs))

    def forward(self, first, second, K, extrinsics, masks=None) -> Tuple[torch.Tensor, torch.Tensor]:
        b, n = first.shape[:2]
        pairs = torch.cat([pack_cameras(first), pack_cameras(second)], dim=1)
        with record_function("encoders"):
            features = unpack_cameras(recomputed(self._encode, pairs, enabled=self.recompute, module=self.encoder), b, n)
        K_feat = feature_intrinsics(K, first.shape[-2:], features.shape[-2:], self.convention)
        with record_function("back-projection"):
            volume = self.fusion_net.fuse(features, K_feat, extrinsics, masks)
        with record_function("fusion convolutions"):
            bev = self.fusion_net.bird_eye_view(volume)
        with record_function("decoder"):
            axis_angle, translation = self.pose_decoder(bev)
        axis_angle, translation = axis_angle.reshape(b, 3), translation.reshape(b, 3)
        if self.max_translation is not None:
            translation = translation.clamp(-self.max_translation, self.max_translation)
        return axis_angle, translation
