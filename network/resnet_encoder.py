"""ResNet feature encoder (monodepth2 / packnet-sfm style) on top of torchvision's ResNet.

``ResnetEncoder(num_layers)`` returns five feature maps of an image batch [B, 3·n, H, W] in [0, 1]:

=====  ========  ===========================  ===========================
level  stride    channels (ResNet-18/34)      channels (ResNet-50/101/152)
=====  ========  ===========================  ===========================
0      1/2       64   (conv1 + bn1 + relu)    64
1      1/4       64   (maxpool + layer1)      256
2      1/8       128  (layer2)                512
3      1/16      256  (layer3)                1024
4      1/32      512  (layer4)                2048
=====  ========  ===========================  ===========================

Each stage rounds up, so level k has size ceil(H / 2^(k+1)) × ceil(W / 2^(k+1)) for any H, W.

Parameter names follow the reference checkpoints: the torchvision ResNet is the attribute
``encoder`` (keys ``encoder.conv1.weight``, ``encoder.layer1.0.bn1.running_mean``, ...), and its
``fc`` (and ``avgpool``) are removed, as in VFDepth, so a torchvision state_dict maps 1:1 minus
``fc.*``.

Weights (``weights_init``, the config key ``model.weights_init``):

* ``True``: ImageNet weights (``ResNet{n}_Weights.IMAGENET1K_V1``, the original torchvision
  weights that monodepth2 and packnet-sfm used) through torchvision's weights API.  They load from
  the torch hub cache (``$TORCH_HOME/hub/checkpoints``) when present, and are downloaded otherwise;
  without network access and without a cached copy a ``RuntimeError`` says so and how to proceed.
* a path (str or ``os.PathLike``): a local ``.pth`` file holding a torchvision ResNet state_dict,
  or a checkpoint dict holding one under ``'state_dict'`` or ``'model'``.  Leading ``'module.'``
  (DDP) and ``'encoder.'`` prefixes are stripped; when the file holds a whole network (e.g. a depth
  net saved by this project or by VFDepth: ``encoder.encoder.conv1.weight``, ``decoder...``), its
  encoder sub-tree is taken.  ``fc.*`` is ignored.  Missing, unexpected or mis-shaped keys are an
  error that names them.
* ``False`` / ``None``: random initialisation (torchvision's).

Multi-image input (``num_input_images = n > 1``, the pose encoder on n frames stacked on the
channels): conv1 takes 3·n channels.  Pretrained 3-channel conv1 weights are tiled n times along
the input channels and divided by n, so the encoder responds to n identical stacked images exactly
as the single-image encoder does to one.  A file whose conv1 already has 3·n input channels (a
pose encoder saved by this project) loads as it is.

Input normalisation: ``(x − 0.45) / 0.225`` (``normalize_input=True``, the reference's constants,
applied to all channels); ``input_mean`` / ``input_std`` change them, ``normalize_input=False``
feeds the input as it is.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Dict, List, Union

import torch
import torch.nn as nn
import torchvision.models as tvm

WeightsInit = Union[bool, str, os.PathLike, None]

# num_layers -> (builder, weights enum)
_RESNETS = {
    18: (tvm.resnet18, tvm.ResNet18_Weights),
    34: (tvm.resnet34, tvm.ResNet34_Weights),
    50: (tvm.resnet50, tvm.ResNet50_Weights),
    101: (tvm.resnet101, tvm.ResNet101_Weights),
    152: (tvm.resnet152, tvm.ResNet152_Weights),
}

# Prefixes stripped (in any order, repeatedly) from the keys of a weights file until the ResNet's
# own keys appear: DDP's 'module.', this project's / VFDepth's 'depth_encoder.' / 'pose_encoder.'
# and the 'encoder.' of a ResnetEncoder.
_STRIP_PREFIXES = ("module.", "depth_encoder.", "pose_encoder.", "encoder.")


def _is_state_dict(obj) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(torch.is_tensor(v) for v in obj.values())


def _extract_state_dict(obj, source: str) -> Dict[str, torch.Tensor]:
    """The tensor dict of a loaded weights file: itself, or under 'state_dict' / 'model' (nested)."""
    while not _is_state_dict(obj):
        if isinstance(obj, Mapping) and "state_dict" in obj:
            obj = obj["state_dict"]
        elif isinstance(obj, Mapping) and "model" in obj:
            obj = obj["model"]
        elif isinstance(obj, nn.Module):
            obj = obj.state_dict()
        else:
            found = f"a dict with keys {sorted(map(str, obj.keys()))[:10]}" if isinstance(obj, Mapping) else type(obj).__name__
            raise RuntimeError(
                f"{source}: no ResNet state_dict found (expected a dict of tensors, or a checkpoint dict "
                f"with one under 'state_dict' or 'model'; found {found})"
            )
    return dict(obj)


def _strip_prefixes(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Strip wrapper prefixes until ResNet keys (``conv1.weight``) appear; keep that sub-tree only."""
    while "conv1.weight" not in state:
        for prefix in _STRIP_PREFIXES:
            sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            if sub:
                state = sub
                break
        else:
            break
    return state


def _load_imagenet_state_dict(num_layers: int) -> Dict[str, torch.Tensor]:
    """The torchvision ImageNet weights of ResNet-``num_layers``: from the hub cache, or downloaded."""
    weights = _RESNETS[num_layers][1].IMAGENET1K_V1
    cache_dir = os.path.join(torch.hub.get_dir(), "checkpoints")
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except Exception as err:  # no network, proxy error, corrupt download, ...
        raise RuntimeError(
            f"The ImageNet weights of ResNet-{num_layers} ({weights.url}) are not available offline: they "
            f"are not in the torch hub cache ({cache_dir}) and downloading them failed "
            f"({type(err).__name__}: {err}). Either put that file into {cache_dir} (or point TORCH_HOME "
            f"at a cache that has it), set model.weights_init to a local .pth path (a torchvision ResNet "
            f"state_dict, or a checkpoint dict holding one under 'state_dict' or 'model'), or set "
            f"model.weights_init to false for random initialisation."
        ) from err


def _names(keys: List[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return f"{shown}, ... ({len(keys)} in all)" if len(keys) > limit else shown


class ResnetEncoder(nn.Module):
    """torchvision ResNet without its classifier, returning the 5 feature maps (see the module doc).

    Args:
        num_layers: 18, 34, 50 (also 101, 152).
        weights_init: True (ImageNet), a path to a local ``.pth``, or False / None (random).
        num_input_images: images stacked on the channels (2 for the pose encoder).
        normalize_input: apply ``(x − input_mean) / input_std`` to the input.
    Attributes:
        num_ch_enc: channels of the 5 feature maps, e.g. [64, 64, 128, 256, 512].
        encoder: the torchvision ResNet (no ``fc``, no ``avgpool``).
    """

    def __init__(
        self,
        num_layers: int = 18,
        weights_init: WeightsInit = True,
        num_input_images: int = 1,
        normalize_input: bool = True,
        input_mean: float = 0.45,
        input_std: float = 0.225,
    ):
        super().__init__()
        if num_layers not in _RESNETS:
            raise ValueError(f"ResnetEncoder: num_layers must be one of {sorted(_RESNETS)}, got {num_layers!r}")
        if int(num_input_images) < 1:
            raise ValueError(f"ResnetEncoder: num_input_images must be >= 1, got {num_input_images!r}")
        self.num_layers = int(num_layers)
        self.num_input_images = int(num_input_images)
        self.normalize_input = bool(normalize_input)
        self.input_mean = float(input_mean)
        self.input_std = float(input_std)

        self.encoder = _RESNETS[self.num_layers][0](weights=None)
        del self.encoder.fc  # unused; its parameters would also be unused under DDP
        del self.encoder.avgpool
        if self.num_input_images > 1:
            conv1 = nn.Conv2d(3 * self.num_input_images, 64, kernel_size=7, stride=2, padding=3, bias=False)
            nn.init.kaiming_normal_(conv1.weight, mode="fan_out", nonlinearity="relu")  # as torchvision
            self.encoder.conv1 = conv1

        expansion = 4 if self.num_layers > 34 else 1
        self.num_ch_enc: List[int] = [64] + [c * expansion for c in (64, 128, 256, 512)]

        self.weights_source = "random"
        if weights_init is True:
            self.load_resnet_state_dict(_load_imagenet_state_dict(self.num_layers), source="ImageNet")
            self.weights_source = "imagenet"
        elif isinstance(weights_init, (str, os.PathLike)):
            self.load_weights_file(weights_init)
        elif weights_init is not None and weights_init is not False:
            raise TypeError(
                f"ResnetEncoder: weights_init must be true, false/None or a path to a .pth file, got {weights_init!r}"
            )

    # ------------------------------------------------------------------ weights
    def load_weights_file(self, path: Union[str, os.PathLike]) -> None:
        """Load a local ``.pth`` (see the module doc for what it may hold)."""
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"model.weights_init: the ResNet weights file {path!r} does not exist (use true for the "
                f"ImageNet weights or false for random initialisation)"
            )
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise RuntimeError(f"model.weights_init: could not read the ResNet weights file {path!r}: {err}") from err
        self.load_resnet_state_dict(_extract_state_dict(obj, path), source=path)
        self.weights_source = path

    def load_resnet_state_dict(self, state: Mapping, source: str = "state_dict") -> None:
        """Load a torchvision-ResNet state_dict into ``self.encoder``, strictly.

        Wrapper prefixes are stripped and ``fc.*`` ignored; a 3-channel conv1 is tiled for
        multi-image input.  Raises ``RuntimeError`` naming the missing, unexpected and mis-shaped
        keys if the weights do not match this architecture.  ``num_batches_tracked`` buffers may
        be absent (older torchvision files lack them).
        """
        state = _strip_prefixes(_extract_state_dict(state, source))
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        n = self.num_input_images
        w = state.get("conv1.weight")
        if n > 1 and torch.is_tensor(w) and w.dim() == 4 and w.shape[1] == 3:
            state["conv1.weight"] = torch.cat([w] * n, dim=1) / n

        own = self.encoder.state_dict()
        missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
        unexpected = [k for k in state if k not in own]
        mis_shaped = [
            f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
            for k in own
            if k in state and tuple(state[k].shape) != tuple(own[k].shape)
        ]
        if missing or unexpected or mis_shaped:
            lines = [f"the weights in {source} do not match ResNet-{self.num_layers} "
                     f"with {3 * n} input channels:"]
            if missing:
                lines.append(f"missing keys: {_names(missing)}")
            if unexpected:
                lines.append(f"unexpected keys: {_names(unexpected)}")
            if mis_shaped:
                lines.append(f"shape mismatch (file vs model): {_names(mis_shaped)}")
            raise RuntimeError("\n  ".join(lines))
        self.encoder.load_state_dict(state, strict=False)

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        """x [B, 3·num_input_images, H, W] in [0, 1] -> 5 feature maps (strides 2 .. 32)."""
        expected = 3 * self.num_input_images
        if x.dim() != 4 or x.shape[1] != expected:
            raise ValueError(
                f"ResnetEncoder expects images [B, {expected}, H, W] ({self.num_input_images} RGB image(s) "
                f"stacked on the channels), got shape {tuple(x.shape)}"
            )
        if self.normalize_input:
            x = (x - self.input_mean) / self.input_std
        e = self.encoder
        f0 = e.relu(e.bn1(e.conv1(x)))
        f1 = e.layer1(e.maxpool(f0))
        f2 = e.layer2(f1)
        f3 = e.layer3(f2)
        f4 = e.layer4(f3)
        return [f0, f1, f2, f3, f4]
