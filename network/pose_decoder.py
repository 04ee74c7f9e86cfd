"""Pose decoder (monodepth2 / packnet-sfm style): a feature map -> axis-angle and translation.

    squeeze:  1x1 conv C -> 256 + ReLU              (shared by the num_input_features inputs,
                                                     whose results are concatenated)
    pose 0:   3x3 conv 256·n -> 256, stride s + ReLU
    pose 1:   3x3 conv 256 -> 256, stride s + ReLU
    pose 2:   1x1 conv 256 -> 6·F
    mean over the spatial positions, × 0.01

3x3 convs are zero-padded (padding 1).  ``stride`` is 1 for the per-camera baseline (on ResNet
layer4 features) and 2 for VFDepth's fused pose net (on its 25×25 bird's-eye-view feature).

Output convention: ``(axis_angle [B, F, 1, 3], translation [B, F, 1, 3])``, F =
``num_frames_to_predict_for``; the 6 outputs per frame are ordered (axis-angle, translation).  The
model turns them into a transform with
``geometry.pose_from_axis_angle_translation(axis_angle, translation)``, i.e.
``T = Trans(t) · R(axis_angle)`` (inverted for a backward frame pair).  The ×0.01 keeps the
initial motion close to the identity.  Any clamping of the translation (VFDepth clamps it to
±4 m) is left to the caller.

Parameter names: ``net.0`` (squeeze), ``net.1``, ``net.2``, ``net.3``, as in the reference.
"""
from __future__ import annotations

from typing import Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

HIDDEN = 256


class PoseDecoder(nn.Module):
    """Args:
        num_ch_enc_last: channels of the input feature map (an int, or the encoder's ``num_ch_enc``
            list, whose last entry is taken).
        num_input_features: number of feature maps given to ``forward`` (concatenated after the
            shared squeeze conv).
        num_frames_to_predict_for: F, the number of transforms predicted.
        stride: stride of the two 3x3 convs.
    """

    OUTPUT_SCALE = 0.01

    def __init__(
        self,
        num_ch_enc_last: Union[int, Sequence[int]],
        num_input_features: int = 1,
        num_frames_to_predict_for: int = 1,
        stride: int = 1,
    ):
        super().__init__()
        if not isinstance(num_ch_enc_last, int):
            num_ch_enc_last = list(num_ch_enc_last)[-1]
        self.num_ch_in = int(num_ch_enc_last)
        self.num_input_features = int(num_input_features)
        self.num_frames_to_predict_for = int(num_frames_to_predict_for)
        self.stride = int(stride)
        self.net = nn.ModuleList(
            [
                nn.Conv2d(self.num_ch_in, HIDDEN, kernel_size=1),
                nn.Conv2d(self.num_input_features * HIDDEN, HIDDEN, kernel_size=3, stride=self.stride, padding=1),
                nn.Conv2d(HIDDEN, HIDDEN, kernel_size=3, stride=self.stride, padding=1),
                nn.Conv2d(HIDDEN, 6 * self.num_frames_to_predict_for, kernel_size=1),
            ]
        )

    def forward(
        self, features: Union[torch.Tensor, Sequence[torch.Tensor]]
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """features: one map [B, C, h, w] or a sequence of ``num_input_features`` such maps.

        Returns (axis_angle [B, F, 1, 3], translation [B, F, 1, 3]).
        """
        if torch.is_tensor(features):
            features = [features]
        if len(features) != self.num_input_features:
            raise ValueError(
                f"PoseDecoder was built for {self.num_input_features} feature map(s), got {len(features)}"
            )
        x = torch.cat([F.relu(self.net[0](f)) for f in features], dim=1)
        x = F.relu(self.net[1](x))
        x = F.relu(self.net[2](x))
        x = self.net[3](x)
        x = self.OUTPUT_SCALE * x.mean(dim=(2, 3))
        x = x.view(x.shape[0], self.num_frames_to_predict_for, 1, 6)
        return x[..., :3], x[..., 3:]
