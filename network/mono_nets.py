"""Per-camera networks of the FSM-style baseline (VFDepth's ``depth_model/pose_model: fsm``).

Both run on images with the cameras packed into the batch (``[B·N, 3, H, W]``, see
:func:`network.blocks.pack_cameras`); nothing in them depends on B, N, H, W or the device.

* :class:`MonoDepthNet`: ResNet encoder + monodepth2 :class:`DepthDecoder` (skips on by default)
  -> ``{scale: disp}``, sigmoid outputs in (0, 1); the model converts them to depth
  (``1 / (1/max + (1/min − 1/max)·σ)``, then × fx / focal_length_scale).
* :class:`MonoPoseNet`: ResNet encoder on two frames stacked on the channels (conv1 with 6
  input channels) -> layer4 features -> stride-1 :class:`PoseDecoder` -> (axis_angle, translation),
  each [B·N, 1, 1, 3].  As in the reference, the pair is given in temporal order: [I₋₁, I₀] for
  frame −1 and [I₀, I₁] for frame +1; the model builds ``T = Trans(t)·R`` with
  ``geometry.pose_from_axis_angle_translation`` and inverts it for frame −1.

Parameter names match the reference's ``depth_encoder.encoder.*`` / ``depth_decoder.decoder.*`` and
``pose_encoder.encoder.*`` / ``pose_decoder.net.*``.
"""
from __future__ import annotations

from typing import Dict, Iterable, Optional, Tuple

import torch
import torch.nn as nn

from .depth_decoder import DepthDecoder
from .pose_decoder import PoseDecoder
from .resnet_encoder import ResnetEncoder, WeightsInit


class MonoDepthNet(nn.Module):
    """images [B', 3, H, W] in [0, 1] -> {scale: disp [B', 1, H_s, W_s]} (disp[0] is H × W)."""

    def __init__(
        self,
        num_layers: int = 18,
        weights_init: WeightsInit = True,
        scales: Iterable[int] = (0,),
        use_skips: bool = True,
        normalize_input: bool = True,
    ):
        super().__init__()
        self.depth_encoder = ResnetEncoder(num_layers, weights_init, num_input_images=1, normalize_input=normalize_input)
        self.depth_decoder = DepthDecoder(self.depth_encoder.num_ch_enc, scales, 1, use_skips)

    @property
    def scales(self):
        return self.depth_decoder.scales

    def forward(self, images: torch.Tensor) -> Dict[int, torch.Tensor]:
        features = self.depth_encoder(images)
        return self.depth_decoder(features, image_size=images.shape[-2:])


class MonoPoseNet(nn.Module):
    """(image_a, image_b) each [B', 3, H, W] (or one [B', 6, H, W]) -> (axis_angle, translation),
    each [B', 1, 1, 3].

    ``max_translation``: the translation is clamped to ±max_translation (VFDepth clamps to ±4 for
    DDAD); None disables the clamp.
    """

    def __init__(
        self,
        num_layers: int = 18,
        weights_init: WeightsInit = True,
        normalize_input: bool = True,
        max_translation: Optional[float] = 4.0,
    ):
        super().__init__()
        self.pose_encoder = ResnetEncoder(num_layers, weights_init, num_input_images=2, normalize_input=normalize_input)
        self.pose_decoder = PoseDecoder(
            self.pose_encoder.num_ch_enc[-1], num_input_features=1, num_frames_to_predict_for=1, stride=1
        )
        self.max_translation = None if max_translation is None else float(max_translation)

    def forward(
        self, image_a: torch.Tensor, image_b: Optional[torch.Tensor] = None
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        x = image_a if image_b is None else torch.cat([image_a, image_b], dim=1)
        features = self.pose_encoder(x)
        axis_angle, translation = self.pose_decoder(features[-1])
        if self.max_translation is not None:
            translation = translation.clamp(-self.max_translation, self.max_translation)
        return axis_angle, translation
