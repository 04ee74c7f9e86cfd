"""monodepth2-style depth decoder: ResNet features -> sigmoid disparities at several scales.

Five stages i = 4 .. 0 with widths ``num_ch_dec = [16, 32, 64, 128, 256]``:

    x = upconv(i, 0)(x)                         ConvBlock: reflection-padded 3x3 conv + ELU
    x = nearest-upsample(x)                     ×2, to the size of encoder level i−1 (the image at i = 0)
    x = cat(x, features[i − 1])                 skip, if use_skips and i > 0
    x = upconv(i, 1)(x)                         ConvBlock
    disp[i] = sigmoid(dispconv(i)(x))           reflection-padded 3x3 conv, if i in scales

The first encoder level is at 1/2, so stage 0 ends at the input resolution: ``disp[s]`` has size
ceil(H / 2^s) × ceil(W / 2^s) (exactly H/2^s × W/2^s when H, W are divisible by 2^s) and
``disp[0]`` is exactly H × W.  Upsampling goes to the size of the next encoder feature rather than
blindly ×2 (identical when the input is divisible by 32), so any input size works.  For the last
stage the decoder needs the image size (``image_size``); without it, it assumes twice the size of
the first feature, which is the image size for even H, W.

Outputs are plain sigmoid values in (0, 1): the model turns them into depth
(``depth = 1 / (1/max + (1/min − 1/max)·σ)``, times fx / focal_length_scale for VFDepth).

Parameter names follow monodepth2 / packnet-sfm (``decoder.{k}.conv.conv.weight`` for the ConvBlocks
upconv(4,0), upconv(4,1), upconv(3,0), ..., upconv(0,1) at k = 0..9, then
``decoder.{10 + j}.conv.weight`` for the disparity convs of the scales in ascending order).
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Sequence

import torch
import torch.nn as nn

from .blocks import Conv3x3, ConvBlock, upsample

NUM_CH_DEC = (16, 32, 64, 128, 256)


class DepthDecoder(nn.Module):
    """Args:
        num_ch_enc: channels of the 5 encoder features (``ResnetEncoder.num_ch_enc``).
        scales: output scales, subset of 0..4 (scale s at 1/2^s).
        num_output_channels: channels of each output (1 for disparity).
        use_skips: concatenate encoder features (monodepth2; VFDepth's baseline uses them).

    ``forward(features, image_size=None) -> {scale: disp [B, C, H_s, W_s]}``.
    """

    def __init__(
        self,
        num_ch_enc: Sequence[int],
        scales: Iterable[int] = (0, 1, 2, 3),
        num_output_channels: int = 1,
        use_skips: bool = True,
    ):
        super().__init__()
        num_ch_enc = [int(c) for c in num_ch_enc]
        if len(num_ch_enc) != 5:
            raise ValueError(f"DepthDecoder: num_ch_enc must list 5 encoder widths, got {num_ch_enc}")
        scales = sorted({int(s) for s in scales})
        if not scales or any(s < 0 or s > 4 for s in scales):
            raise ValueError(f"DepthDecoder: scales must be a non-empty subset of 0..4, got {scales}")
        self.num_ch_enc = num_ch_enc
        self.num_ch_dec = list(NUM_CH_DEC)
        self.scales = scales
        self.num_output_channels = int(num_output_channels)
        self.use_skips = bool(use_skips)

        layers: List[nn.Module] = []
        for i in range(4, -1, -1):
            c_in = num_ch_enc[-1] if i == 4 else self.num_ch_dec[i + 1]
            layers.append(ConvBlock(c_in, self.num_ch_dec[i]))  # upconv(i, 0)
            c_in = self.num_ch_dec[i] + (num_ch_enc[i - 1] if self.use_skips and i > 0 else 0)
            layers.append(ConvBlock(c_in, self.num_ch_dec[i]))  # upconv(i, 1)
        for s in scales:
            layers.append(Conv3x3(self.num_ch_dec[s], self.num_output_channels))  # dispconv(s)
        self.decoder = nn.ModuleList(layers)
        self._dispconv_index = {s: 10 + j for j, s in enumerate(scales)}

    def _upconv(self, i: int, j: int) -> nn.Module:
        return self.decoder[2 * (4 - i) + j]

    def forward(
        self, features: Sequence[torch.Tensor], image_size: Optional[Sequence[int]] = None
    ) -> Dict[int, torch.Tensor]:
        """features: the 5 encoder maps; image_size: (H, W) of the input image (see the module doc)."""
        if len(features) != 5:
            raise ValueError(f"DepthDecoder expects the 5 encoder feature maps, got {len(features)}")
        if image_size is None:
            image_size = (2 * features[0].shape[-2], 2 * features[0].shape[-1])
        outputs: Dict[int, torch.Tensor] = {}
        x = features[-1]
        for i in range(4, -1, -1):
            x = self._upconv(i, 0)(x)
            x = upsample(x, features[i - 1].shape[-2:] if i > 0 else image_size)
            if self.use_skips and i > 0:
                x = torch.cat([x, features[i - 1]], dim=1)
            x = self._upconv(i, 1)(x)
            if i in self._dispconv_index:
                outputs[i] = torch.sigmoid(self.decoder[self._dispconv_index[i]](x))
        return outputs
