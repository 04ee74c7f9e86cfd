"""Small building blocks shared by the networks: camera packing and monodepth2-style convolutions.

Camera packing: the batches of this project carry the cameras as an explicit dimension
(``image`` [B, T, N, 3, H, W], see DESIGN.md).  The per-camera networks run on the cameras
folded into the batch dimension, ``[B·N, ...]``, camera index fastest (item ``b·N + n`` is camera
``n`` of sample ``b``), and the result is unfolded again with the same B and N.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


# ----------------------------------------------------------------------------- camera packing
def pack_cameras(x: torch.Tensor) -> torch.Tensor:
    """[B, N, ...] -> [B·N, ...]: fold the camera dimension into the batch (camera fastest)."""
    if x.dim() < 2:
        raise ValueError(f"pack_cameras expects a tensor [B, N, ...], got shape {tuple(x.shape)}")
    return x.flatten(0, 1)


def unpack_cameras(x: torch.Tensor, batch_size: int, num_cams: int) -> torch.Tensor:
    """[B·N, ...] -> [B, N, ...]: the inverse of :func:`pack_cameras`."""
    if x.dim() < 1 or x.shape[0] != batch_size * num_cams:
        raise ValueError(
            f"unpack_cameras: leading dimension {x.shape[0] if x.dim() else None} of a tensor of shape "
            f"{tuple(x.shape)} is not batch_size·num_cams = {batch_size}·{num_cams}"
        )
    return x.unflatten(0, (batch_size, num_cams))


# ----------------------------------------------------------------------------- convolutions
def pad_reflect(x: torch.Tensor, pad: int = 1) -> torch.Tensor:
    """Reflection padding by ``pad`` on all four sides of [B, C, H, W].

    Reflection is undefined where a side is not longer than ``pad`` (a 1-pixel-high feature map
    of a tiny input); there the border is replicated instead, which is the only sensible
    reflection of a constant row/column, so any input size works.
    """
    if x.shape[-2] > pad and x.shape[-1] > pad:
        return F.pad(x, (pad, pad, pad, pad), mode="reflect")
    return F.pad(x, (pad, pad, pad, pad), mode="replicate")


class Conv3x3(nn.Module):
    """3x3 convolution (stride 1, with bias) on a padded input, so the size is kept.

    ``use_refl``: reflection padding (default, as in monodepth2) or zero padding.
    Parameter names: ``conv.weight``, ``conv.bias`` (as monodepth2 / packnet-sfm).
    """

    def __init__(self, in_channels: int, out_channels: int, use_refl: bool = True):
        super().__init__()
        self.use_refl = use_refl
        self.conv = nn.Conv2d(int(in_channels), int(out_channels), kernel_size=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = pad_reflect(x, 1) if self.use_refl else F.pad(x, (1, 1, 1, 1))
        return self.conv(x)


class ConvBlock(nn.Module):
    """:class:`Conv3x3` followed by ELU.  Parameter names: ``conv.conv.weight``, ``conv.conv.bias``."""

    def __init__(self, in_channels: int, out_channels: int, use_refl: bool = True):
        super().__init__()
        self.conv = Conv3x3(in_channels, out_channels, use_refl)
        self.nonlin = nn.ELU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlin(self.conv(x))


def upsample(x: torch.Tensor, size: Optional[Sequence[int]] = None) -> torch.Tensor:
    """Nearest-neighbour upsampling of [B, C, H, W]: ×2, or to ``size`` (H', W') if given.

    With ``size == (2H, 2W)`` the result is identical to ×2; other sizes are used by the decoders
    to meet an encoder feature (or the input image) whose size is not exactly twice as large,
    which happens for inputs not divisible by 32.
    """
    if size is None:
        return F.interpolate(x, scale_factor=2.0, mode="nearest")
    size = (int(size[0]), int(size[1]))
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="nearest")
