"""The multi-frame monocular scene flow network (multi-mono-sf, spec/multi-mono-sf.md §2).

One network, :class:`MonoSceneFlowNet`, run on a monocular sequence of T >= 3 frames: a feature
pyramid per frame, then for every centre frame t = 1..T-2 of the sequence, on the triplet
(t-1, t, t+1), a coarse-to-fine decoder shared by both time directions that estimates

* the scene flow t -> t+1 ("forward") and t -> t-1 ("backward"), metres in the camera frame of t,
  residual from level to level (absolute at the coarsest level);
* the disparity of frame t as a fraction of the image width, sigmoid(mean of both directions'
  logits) * max_disparity, so the disparity in pixels at any resolution is d * width;

with a ConvLSTM in every decoder level but the coarsest, whose hidden and cell states are carried
from the previous centre frame by forward splatting them with the previous step's optical flow
(detached) and its disparity as the z-order metric (nearer points win).

Module and parameter names follow the reference (``feature_pyramid_extractor.convs.{i}.{j}.0``,
``flow_estimators.{l}.convs|conv_sf|conv_d1|conv_c_init|conv_lstm|featprop_softsplat.conv1x1``,
``upconv_layers.{l}.conv1.0``) so that a converter maps the released state dict one to one; the
reference's level-0 ConvLSTM parts are never used there and do not exist here (746,978 parameters
fewer: 6,789,942 instead of 7,536,920).

Geometry: K of a pyramid level of size (h, w) is the input K with fx, cx scaled by w / W and
fy, cy by h / H (no half-pixel shift). That is what the reference does, and it is exact for the
features: a stride-2 3x3 convolution with padding 1 centres its output pixel j on input pixel 2j.
Depth = fx * baseline / (d * w + 1e-4), clamped to [1e-3, 80] m (spec §4), which is the same at
every level since fx and w scale together. The baseline is the rig's (a tensor per batch item);
:data:`REFERENCE_BASELINE` (0.54 m, KITTI) where there is no stereo rig.

Where the reference has a quirk (spec §10), the default here does the correct thing and a switch
reproduces the reference:

* ``unscaled_state_flow``: the flow that splats the ConvLSTM states is resized to a level but its
  values are not rescaled (in pixels of the full image, so far too long at coarse levels).
* ``shared_cell_state``: one cell state shared by both directions (the forward LSTM at t reads the
  backward cell state of t-1, the backward one the forward cell state just computed at t).
* ``frozen_validity_gate``: the validity mask of the splatted states is a hard threshold of a
  1x1 conv of the feature agreement, which never receives a gradient. By default the gate is
  sigmoid(1x1 conv of the mean channel product), initialised as a soft threshold at an agreement
  of 0.5, and learns.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from geometry import (backproject, disparity_to_depth, flip_intrinsics, forward_splat, invert_intrinsics, project,
                      sample_at_pixels, scale_intrinsics, scene_flow_to_optical_flow, softmax_splat)

from .correlation import correlation

__all__ = [
    "MonoSceneFlowNet", "FeaturePyramid", "SceneFlowDecoder", "StatePropagation", "UpConv", "conv",
    "standardise_features", "warp_by_scene_flow", "level_intrinsics", "disparity_to_depth_sf",
    "flip_scene_flow", "post_process", "resize_as", "resize_to", "REFERENCE_BASELINE", "PYRAMID_CHANNELS",
    "DISPARITY_EPS", "MIN_DEPTH", "MAX_DEPTH", "LEAKY_SLOPE",
]

PYRAMID_CHANNELS = (3, 32, 64, 96, 128, 192)
DECODER_CHANNELS = 96          # x_out / hidden state / cell state width
LEAKY_SLOPE = 0.1
REFERENCE_BASELINE = 0.54      # metres: KITTI's stereo baseline, multi-mono-sf's constant for every dataset
DISPARITY_EPS = 1e-4           # depth = fx * b / (disp_px + eps)
MIN_DEPTH, MAX_DEPTH = 1e-3, 80.0
STANDARDISE_EPS = 1e-16
WARP_VALID_THRESHOLD = 0.999   # a warped feature counts when the bilinear weights inside the map sum to this
STATE_COVERAGE = 0.5           # a pixel is covered when this much splatted mass lands on it ...
STATE_MIN_COVERED = 0.5        # ... and the states are reset when less than this fraction is covered
SPLAT_METRIC_SCALE, SPLAT_METRIC_OFFSET = 20.0, 0.4   # softmax-splat metric 20 * (d - 0.4): nearer wins
FROZEN_GATE_THRESHOLD = 0.5
GATE_INIT_WEIGHT, GATE_INIT_BIAS = 4.0, -2.0           # learnable gate: sigmoid(4 * agreement - 2)
PP_RAMP_START, PP_RAMP_SLOPE = 0.05, 20.0              # flip post-processing: flipped pass on the outer 5 %


# ---------------------------------------------------------------------------------------- helpers
def conv(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, relu: bool = True,
         padding_mode: str = "zeros") -> nn.Sequential:
    """Conv2d (same padding, bias) + LeakyReLU(0.1), as a Sequential so parameters are named ``0.*``."""
    layers: List[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                                         padding=(kernel_size - 1) // 2, bias=True, padding_mode=padding_mode)]
    if relu:
        layers.append(nn.LeakyReLU(LEAKY_SLOPE))
    return nn.Sequential(*layers)


def resize_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize of [B, C, H, W] to ``size`` with align_corners=True (the reference's
    interpolate2d_as); values are not rescaled. A no-op when the size already matches."""
    size = (int(size[0]), int(size[1]))
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


def resize_as(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return resize_to(x, like.shape[-2:])


def standardise_features(features: Sequence[torch.Tensor]) -> List[torch.Tensor]:
    """Each map [B, C, H, W] standardised on its own, per sample over (C, H, W): (f - mean) /
    sqrt(var + 1e-16), with the unbiased variance (UFlow / multi-mono-sf)."""
    out = []
    for f in features:
        mean = f.mean(dim=(-3, -2, -1), keepdim=True)
        var = f.var(dim=(-3, -2, -1), keepdim=True)
        out.append((f - mean) / torch.sqrt(var + STANDARDISE_EPS))
    return out


def level_intrinsics(K: torch.Tensor, full_hw: Sequence[int], level_hw: Sequence[int]) -> torch.Tensor:
    """K [B, 3, 3] of the input (size full_hw) for a map of size level_hw: fx, cx * w/W; fy, cy * h/H."""
    return scale_intrinsics(K, level_hw[1] / full_hw[1], level_hw[0] / full_hw[0], convention="reference")


def _per_item(value: torch.Tensor) -> torch.Tensor:
    """[B] -> [B, 1, 1, 1] so that it broadcasts against maps."""
    return value.reshape(-1, 1, 1, 1)


def disparity_to_depth_sf(disp_px: torch.Tensor, K: torch.Tensor, baseline: torch.Tensor) -> torch.Tensor:
    """Depth [B, 1, h, w] = fx * baseline / (disp_px + 1e-4), clamped to [1e-3, 80] m (spec §4).

    disp_px [B, 1, h, w] in pixels of a map of that size; K [B, 3, 3] for that size; baseline [B]."""
    return disparity_to_depth(disp_px, _per_item(K[:, 0, 0]), _per_item(baseline), eps=DISPARITY_EPS,
                              min_depth=MIN_DEPTH, max_depth=MAX_DEPTH)


def _valid_sample_mask(pixels: torch.Tensor, hw: Sequence[int], threshold: float) -> torch.Tensor:
    """[B, 1, h, w]: 1 where bilinear sampling at ``pixels`` keeps at least ``threshold`` of its
    weight inside an image of size hw (grid_sample of ones, as the reference does)."""
    ones = pixels.new_ones(pixels.shape[0], 1, int(hw[0]), int(hw[1]))
    return (sample_at_pixels(ones, pixels.detach()) >= threshold).to(pixels.dtype)


def warp_by_scene_flow(x: torch.Tensor, scene_flow: torch.Tensor, disp: torch.Tensor, K: torch.Tensor,
                       baseline: torch.Tensor, valid_threshold: float = WARP_VALID_THRESHOLD) -> torch.Tensor:
    """Backward-warp x [B, C, h, w] (a map of the other frame) into the reference frame through 3D.

    Each reference pixel is back-projected with the depth of ``disp`` (width-normalised, resized
    to h x w, depth as :func:`disparity_to_depth_sf`), moved by ``scene_flow`` [B, 3, h, w]
    (metres), projected with K [B, 3, 3] (for h x w) and x is sampled there. Samples that reach
    outside x (bilinear weight inside < valid_threshold) are zeroed.
    """
    h, w = x.shape[-2:]
    depth = disparity_to_depth_sf(resize_to(disp, (h, w)) * w, K, baseline)
    points = backproject(depth, invert_intrinsics(K))
    pixels, _ = project(points + scene_flow, K)
    warped = sample_at_pixels(x, pixels)
    return warped * _valid_sample_mask(pixels, (h, w), valid_threshold)


def flip_scene_flow(sf: torch.Tensor) -> torch.Tensor:
    """Scene flow (or any vector map with x first) of a horizontally flipped image, back in the
    unflipped image: flip along the width and negate the x component."""
    flipped = torch.flip(sf, dims=[-1])
    sign = torch.ones(sf.shape[-3], 1, 1, dtype=sf.dtype, device=sf.device)
    sign[0] = -1.0
    return flipped * sign


def post_process(pred: torch.Tensor, pred_from_flipped: torch.Tensor) -> torch.Tensor:
    """Monodepth-style flip post-processing of [..., C, H, W] maps (spec §2).

    ``pred_from_flipped`` is the flipped pass already brought back to the unflipped image. The
    leftmost 5 % of the width take it (the unflipped pass sees no context there), ramping to the
    plain mean at 10 %; the mirror image of that on the right takes ``pred``.
    """
    w = pred.shape[-1]
    grid = torch.linspace(0.0, 1.0, w, dtype=pred.dtype, device=pred.device)
    left = 1.0 - torch.clamp(PP_RAMP_SLOPE * (grid - PP_RAMP_START), 0.0, 1.0)
    right = torch.flip(left, dims=[0])
    return right * pred + left * pred_from_flipped + (1.0 - left - right) * 0.5 * (pred + pred_from_flipped)


# ---------------------------------------------------------------------------------------- modules
class FeaturePyramid(nn.Module):
    """Five levels of (stride-2 conv, conv), channels 32, 64, 96, 128, 192; returned coarse first."""

    def __init__(self, channels: Sequence[int] = PYRAMID_CHANNELS, padding_mode: str = "zeros"):
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Sequential(conv(c_in, c_out, stride=2, padding_mode=padding_mode),
                          conv(c_out, c_out, padding_mode=padding_mode))
            for c_in, c_out in zip(channels[:-1], channels[1:]))

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        pyramid = []
        for block in self.convs:
            x = block(x)
            pyramid.append(x)
        return pyramid[::-1]


class UpConv(nn.Module):
    """Nearest x2, conv 3x3 + LeakyReLU, then bilinear to the next level's size."""

    def __init__(self, channels: int = DECODER_CHANNELS, padding_mode: str = "zeros"):
        super().__init__()
        self.conv1 = conv(channels, channels, padding_mode=padding_mode)

    def forward(self, x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        return resize_to(self.conv1(F.interpolate(x, scale_factor=2.0, mode="nearest")), size)


class StatePropagation(nn.Module):
    """Forward-splat ConvLSTM states from frame t-1 into frame t, keeping only where valid.

    Softmax splatting with the optical flow t-1 -> t and the metric 20 * (d - 0.4) of the
    width-normalised disparity d of t-1 (nearer points win). Where the previous step's flow covers
    less than half of a sample's pixels (coverage of a summation-splatted ones map > 0.5), that
    sample's states are reset to zero. Elsewhere they are multiplied by a validity gate computed
    from the agreement of the splatted standardised features of t-1 with those of t (module
    docstring for the frozen reference gate and the learnable default).
    """

    def __init__(self, frozen_gate: bool = False):
        super().__init__()
        self.frozen_gate = bool(frozen_gate)
        self.conv1x1 = nn.Sequential(nn.Conv2d(1, 1, kernel_size=1, bias=True))
        if self.frozen_gate:
            # The threshold lets no gradient through: mark the weights so, rather than leave
            # parameters that never get a gradient (DistributedDataParallel would wait for them).
            self.conv1x1.requires_grad_(False)

    def init_gate(self) -> None:
        """The learnable gate starts as a soft threshold at agreement 0.5 (the frozen one keeps the
        reference's random initialisation)."""
        if not self.frozen_gate:
            nn.init.constant_(self.conv1x1[0].weight, GATE_INIT_WEIGHT)
            nn.init.constant_(self.conv1x1[0].bias, GATE_INIT_BIAS)

    def gate(self, feat_prev_splatted: torch.Tensor, feat_curr: torch.Tensor) -> torch.Tensor:
        """Validity [B, 1, h, w] of the splatted states."""
        if self.frozen_gate:
            agreement = (feat_prev_splatted * feat_curr).sum(dim=1, keepdim=True)
            logits = F.leaky_relu(self.conv1x1(agreement), LEAKY_SLOPE)
            return (logits > FROZEN_GATE_THRESHOLD).to(feat_curr.dtype)
        agreement = (feat_prev_splatted * feat_curr).mean(dim=1, keepdim=True)
        return torch.sigmoid(self.conv1x1(agreement))

    def forward(self, states: Sequence[torch.Tensor], flow: torch.Tensor, disp: torch.Tensor,
                feat_prev: torch.Tensor, feat_curr: torch.Tensor) -> List[torch.Tensor]:
        """states: maps [B, C_i, h, w] of frame t-1; flow [B, 2, h, w] (pixels of this size) and
        disp [B, 1, h, w] of frame t-1; feat_prev / feat_curr [B, C, h, w] standardised features of
        t-1 and t. Returns the states in frame t, in the same order."""
        widths = [s.shape[1] for s in states]
        coverage = forward_splat(torch.ones_like(disp), flow)
        covered = ((coverage > STATE_COVERAGE).to(flow.dtype).mean(dim=(1, 2, 3)) >= STATE_MIN_COVERED)
        metric = SPLAT_METRIC_SCALE * (disp - SPLAT_METRIC_OFFSET)
        # One splat for all states and the features: they share the flow and the metric.
        splatted = softmax_splat(torch.cat([*states, feat_prev], dim=1), flow, metric)
        parts = torch.split(splatted, widths + [feat_prev.shape[1]], dim=1)
        keep = self.gate(parts[-1], feat_curr) * covered.to(flow.dtype).reshape(-1, 1, 1, 1)
        return [p * keep for p in parts[:-1]]


class SceneFlowDecoder(nn.Module):
    """The split decoder of one level: a trunk (in -> 128 -> 128 -> 96), an optional ConvLSTM on
    its output, and two heads (96 -> 64 -> 32 -> 3 scene flow, -> 1 disparity logit)."""

    def __init__(self, in_channels: int, use_lstm: bool, frozen_gate: bool = False, padding_mode: str = "zeros"):
        super().__init__()
        self.use_lstm = bool(use_lstm)
        if self.use_lstm:
            self.featprop_softsplat = StatePropagation(frozen_gate)
        self.convs = nn.Sequential(conv(in_channels, 128, padding_mode=padding_mode),
                                   conv(128, 128, padding_mode=padding_mode),
                                   conv(128, DECODER_CHANNELS, padding_mode=padding_mode))
        self.conv_sf = nn.Sequential(conv(DECODER_CHANNELS, 64, padding_mode=padding_mode),
                                     conv(64, 32, padding_mode=padding_mode),
                                     conv(32, 3, relu=False, padding_mode=padding_mode))
        self.conv_d1 = nn.Sequential(conv(DECODER_CHANNELS, 64, padding_mode=padding_mode),
                                     conv(64, 32, padding_mode=padding_mode),
                                     conv(32, 1, relu=False, padding_mode=padding_mode))
        if self.use_lstm:
            self.conv_c_init = conv(DECODER_CHANNELS, DECODER_CHANNELS, padding_mode=padding_mode)
            self.conv_lstm = conv(2 * DECODER_CHANNELS, 4 * DECODER_CHANNELS, relu=False, padding_mode=padding_mode)

    def forward(self, x: torch.Tensor, state: Optional[Tuple[torch.Tensor, torch.Tensor]] = None):
        """x: the level's input; state: the (hidden, cell) states propagated into this frame, or
        None at the first step (the cell state is then initialised from the trunk's output).
        Returns (x_out, cell or None, scene flow (residual), disparity logit)."""
        x_curr = self.convs(x)
        cell = None
        if self.use_lstm:
            if state is None:
                cell = self.conv_c_init(x_curr)
            else:
                hidden, cell_prev = state
                gates = self.conv_lstm(torch.cat([x_curr, hidden], dim=1))
                i, f, o, g = torch.split(gates, DECODER_CHANNELS, dim=1)
                # LeakyReLU instead of tanh for the candidate and the output: the reference's choice.
                cell = torch.sigmoid(f) * cell_prev + torch.sigmoid(i) * F.leaky_relu(g, LEAKY_SLOPE)
                x_curr = torch.sigmoid(o) * F.leaky_relu(cell, LEAKY_SLOPE)
        return x_curr, cell, self.conv_sf(x_curr), self.conv_d1(x_curr)


# ---------------------------------------------------------------------------------------- network
class MonoSceneFlowNet(nn.Module):
    """Multi-frame monocular scene flow and disparity (module docstring).

    forward(images [B, T, 3, H, W], K [B, 3, 3] at (H, W), baseline [B] metres) -> dict of lists
    over the T-2 centre frames (in order), each a list over scales s = 0..output_level of maps at
    size (H / 2^s, W / 2^s) (scale 0 = input size):

    * ``sf_f`` [B, 3, h, w]: scene flow t -> t+1, metres; ``sf_b``: t -> t-1;
    * ``disp`` [B, 1, h, w]: disparity of t as a fraction of the width (pixels = disp * w).
    """

    def __init__(self, search_range: int = 4, output_level: int = 3, max_disparity: float = 0.3,
                 padding_mode: str = "zeros", unscaled_state_flow: bool = False, shared_cell_state: bool = False,
                 frozen_validity_gate: bool = False, disparity_layer_norm: bool = False):
        super().__init__()
        if not 0 <= output_level < len(PYRAMID_CHANNELS) - 1:
            raise ValueError(f"model.output_level must be in [0, {len(PYRAMID_CHANNELS) - 2}], got {output_level}")
        self.search_range = int(search_range)
        self.output_level = int(output_level)
        self.max_disparity = float(max_disparity)
        self.unscaled_state_flow = bool(unscaled_state_flow)
        self.shared_cell_state = bool(shared_cell_state)
        self.disparity_layer_norm = bool(disparity_layer_norm)

        self.feature_pyramid_extractor = FeaturePyramid(PYRAMID_CHANNELS, padding_mode)
        self.flow_estimators = nn.ModuleList()
        self.upconv_layers = nn.ModuleList()
        corr_channels = (2 * self.search_range + 1) ** 2
        for level, channels in enumerate(PYRAMID_CHANNELS[::-1][:self.output_level + 1]):
            if level == 0:
                in_channels = channels + 2 * corr_channels
            else:
                # + upsampled x_out, scene flow of both directions and the disparity
                in_channels = channels + 2 * corr_channels + DECODER_CHANNELS + 2 * 3 + 1
                self.upconv_layers.append(UpConv(DECODER_CHANNELS, padding_mode))
            # The coarsest level never has a previous state to carry (the reference builds an
            # LSTM there too and never uses it).
            self.flow_estimators.append(SceneFlowDecoder(in_channels, use_lstm=level > 0,
                                                         frozen_gate=frozen_validity_gate, padding_mode=padding_mode))
        self._init_weights()

    def _init_weights(self) -> None:
        """MSRA (kaiming normal) weights and zero biases everywhere, as the reference."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        for module in self.modules():
            if isinstance(module, StatePropagation):
                module.init_gate()

    @property
    def num_scales(self) -> int:
        return self.output_level + 1

    # ---------------------------------------------------------------------------------- one step
    def _state_flow(self, flow: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        """The full-resolution optical flow, resized to a level (and rescaled unless reference)."""
        resized = resize_to(flow, size)
        if self.unscaled_state_flow:
            return resized
        scale = torch.tensor([size[1] / flow.shape[-1], size[0] / flow.shape[-2]], dtype=flow.dtype,
                             device=flow.device).reshape(1, 2, 1, 1)
        return resized * scale

    def _run_step(self, pyramids: Tuple[List[torch.Tensor], List[torch.Tensor], List[torch.Tensor]],
                  image_hw: Sequence[int], K: torch.Tensor, baseline: torch.Tensor, prev: Optional[Dict]) -> Dict:
        """One centre frame: pyramids of (t-1, t, t+1), coarse first. ``prev`` holds the previous
        step's full-resolution sf_f and disp and its per-level hidden and cell states."""
        pyr0, pyr1, pyr2 = pyramids
        b = K.shape[0]
        flow_prev = disp_prev = None
        if prev is not None:
            depth_prev = disparity_to_depth_sf(prev["disp"] * image_hw[1], K, baseline)
            flow_prev = scene_flow_to_optical_flow(depth_prev, prev["sf"], K).detach()
            disp_prev = prev["disp"]
        sfs_f, sfs_b, disps, hiddens, cells = [], [], [], [], []
        sf_f = sf_b = disp = x_out = None    # the previous (coarser) level's estimates
        for level, decoder in enumerate(self.flow_estimators):
            x0, x1, x2 = pyr0[level], pyr1[level], pyr2[level]
            size = x1.shape[-2:]
            K_level = level_intrinsics(K, image_hw, size)
            if level == 0:
                x0_warp, x2_warp = x0, x2
            else:
                sf_f, sf_b, disp = resize_to(sf_f, size), resize_to(sf_b, size), resize_to(disp, size)
                x_out = self.upconv_layers[level - 1](x_out, size)                 # both directions
                # Both warps at once: x2 by the forward flow, x0 by the backward one.
                warped = warp_by_scene_flow(torch.cat([x2, x0]), torch.cat([sf_f, sf_b]), disp.repeat(2, 1, 1, 1),
                                            K_level.repeat(2, 1, 1), baseline.repeat(2))
                x2_warp, x0_warp = warped[:b], warped[b:]
            x0, x0_warp, x1, x2_warp = standardise_features([x0, x0_warp, x1, x2_warp])
            corr = F.leaky_relu(correlation(torch.cat([x1, x1]), torch.cat([x2_warp, x0_warp]), self.search_range),
                                LEAKY_SLOPE)
            corr_f, corr_b = corr[:b], corr[b:]
            if level == 0:
                inputs_f = torch.cat([x1, corr_f, corr_b], dim=1)
                inputs_b = torch.cat([x1, corr_b, corr_f], dim=1)
            else:
                x_out_f, x_out_b = x_out[:b], x_out[b:]
                inputs_f = torch.cat([x1, x_out_f, corr_f, corr_b, sf_f, -sf_b, disp], dim=1)
                inputs_b = torch.cat([x1, x_out_b, corr_b, corr_f, sf_b, -sf_f, disp], dim=1)

            if decoder.use_lstm and prev is not None:
                flow_level = self._state_flow(flow_prev, size)
                disp_level = resize_to(disp_prev, size)
                hidden_prev, cell_prev = prev["hidden"][level], prev["cell"][level]
                propagate = decoder.featprop_softsplat

                def carry(states):
                    return propagate(states, flow_level, disp_level, x0, x1)
                if self.shared_cell_state:
                    # Reference: the forward LSTM reads the last cell state written (the backward
                    # one of t-1), the backward LSTM the forward one it has just written at t.
                    h_in, c_in = carry([hidden_prev[:b], cell_prev])
                    h_f, c_f, res_f, logit_f = decoder(inputs_f, (h_in, c_in))
                    h_in, c_in = carry([hidden_prev[b:], c_f])
                    h_b, c_b, res_b, logit_b = decoder(inputs_b, (h_in, c_in))
                    x_out, cell = torch.cat([h_f, h_b]), c_b
                    res, logits = torch.cat([res_f, res_b]), torch.cat([logit_f, logit_b])
                else:
                    h_f, h_b, c_f, c_b = carry([hidden_prev[:b], hidden_prev[b:], cell_prev[:b], cell_prev[b:]])
                    x_out, cell, res, logits = decoder(torch.cat([inputs_f, inputs_b]),
                                                       (torch.cat([h_f, h_b]), torch.cat([c_f, c_b])))
            else:
                x_out, cell, res, logits = decoder(torch.cat([inputs_f, inputs_b]))
                if cell is not None and self.shared_cell_state:
                    cell = cell[b:]            # the backward call wrote the shared state last
            if level == 0:
                sf_f, sf_b = res[:b], res[b:]
            else:
                sf_f, sf_b = sf_f + res[:b], sf_b + res[b:]
            logit = (logits[:b] + logits[b:]) / 2.0
            if self.disparity_layer_norm:
                logit = F.layer_norm(logit, logit.shape[1:])
            disp = torch.sigmoid(logit) * self.max_disparity
            sfs_f.append(sf_f)
            sfs_b.append(sf_b)
            disps.append(disp)
            hiddens.append(x_out)
            cells.append(cell)

        # Finest estimate first, each brought to the size of its scale (no value rescaling).
        sizes = [tuple(image_hw)] + [tuple(p.shape[-2:]) for p in pyr1[::-1]]
        order = list(range(len(disps)))[::-1]
        return {
            "sf_f": [resize_to(sfs_f[i], sizes[s]) for s, i in enumerate(order)],
            "sf_b": [resize_to(sfs_b[i], sizes[s]) for s, i in enumerate(order)],
            "disp": [resize_to(disps[i], sizes[s]) for s, i in enumerate(order)],
            "hidden": hiddens,
            "cell": cells,
        }

    # ---------------------------------------------------------------------------------- sequence
    def forward(self, images: torch.Tensor, K: torch.Tensor, baseline: torch.Tensor) -> Dict[str, List]:
        if images.dim() != 5 or images.shape[2] != 3:
            raise ValueError(f"MonoSceneFlowNet expects images [B, T, 3, H, W], got {tuple(images.shape)}")
        b, t, _, h, w = images.shape
        if t < 3:
            raise ValueError(f"MonoSceneFlowNet needs at least 3 frames (one centre frame), got T={t}")
        baseline = torch.as_tensor(baseline, dtype=images.dtype, device=images.device).reshape(-1).expand(b)
        # One pyramid pass for all frames.
        features = self.feature_pyramid_extractor(images.reshape(b * t, 3, h, w))
        pyramids = [[f.reshape(b, t, *f.shape[1:])[:, i] for f in features] for i in range(t)]
        out: Dict[str, List] = {"sf_f": [], "sf_b": [], "disp": []}
        prev = None
        for centre in range(1, t - 1):
            step = self._run_step((pyramids[centre - 1], pyramids[centre], pyramids[centre + 1]), (h, w), K,
                                  baseline, prev)
            for key in out:
                out[key].append(step[key])
            prev = {"sf": step["sf_f"][0], "disp": step["disp"][0], "hidden": step["hidden"], "cell": step["cell"]}
        return out

    def forward_flipped(self, images: torch.Tensor, K: torch.Tensor, baseline: torch.Tensor,
                        convention: str = "half_pixel") -> Dict[str, List]:
        """The pass on the horizontally flipped images (K flipped with ``convention``), with its
        outputs brought back into the unflipped images (scene flow x negated)."""
        width = images.shape[-1]
        out = self.forward(torch.flip(images, dims=[-1]), flip_intrinsics(K, width, convention), baseline)
        return {
            "sf_f": [[flip_scene_flow(s) for s in step] for step in out["sf_f"]],
            "sf_b": [[flip_scene_flow(s) for s in step] for step in out["sf_b"]],
            "disp": [[torch.flip(d, dims=[-1]) for d in step] for step in out["disp"]],
        }
