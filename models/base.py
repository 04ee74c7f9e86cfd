"""The one interface every algorithm implements, and the registry keyed by `model.type`.

An algorithm is an nn.Module that owns its networks (saved one file per network, named by
`network_names`), turns a batch of the data contract (dataset/contract.py, with the batch
dimension, on the device) into outputs, scores them with named loss terms, and exposes its
predictions in one standard form so the trainer, the evaluator and the tools never look inside.
"""

from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Tuple

import torch
from torch import nn


@dataclass
class Predictions:
    """Standard predictions of an algorithm for a batch.

    depth: [B, N, 1, H, W] metres at the input resolution, per camera of the target frame.
    poses: {frame offset f: [B, N, 4, 4]} T_cam(t+f)_cam(t): maps points of each camera at the
        target frame into the same camera at frame t+f (empty when the algorithm has no pose).
    scene_flow: {"fwd" / "bwd": [B, N, 3, H, W]} metres in the camera frame, where the algorithm
        estimates it (the KITTI convention of dataset/synthetic/sequence.py).
    extras: anything else worth showing (disparity, masks), keyed by name.
    """
    depth: torch.Tensor
    poses: Dict[int, torch.Tensor] = field(default_factory=dict)
    scene_flow: Dict[str, torch.Tensor] = field(default_factory=dict)
    extras: Dict[str, torch.Tensor] = field(default_factory=dict)


class Algorithm(nn.Module):
    """Base class of the algorithms. Subclasses set `network_names` (attributes holding the
    networks; each is checkpointed as `<name>.pth`) and implement the three methods below."""

    network_names: Tuple[str, ...] = ()

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg

    def networks(self) -> Dict[str, nn.Module]:
        """The named networks, in `network_names` order."""
        return {name: getattr(self, name) for name in self.network_names}

    def forward(self, batch: Dict) -> Dict:
        """Run the networks on a batch; returns whatever the losses and predictions need."""
        raise NotImplementedError

    def compute_losses(self, batch: Dict, outputs: Dict) -> Dict[str, torch.Tensor]:
        """Named scalar loss terms (already weighted) plus their sum under "total"."""
        raise NotImplementedError

    def predict(self, batch: Dict, outputs: Dict) -> Predictions:
        """The standard predictions of `outputs`."""
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:
        """Called by the trainer at the start of every epoch (0-based), before its first step, and
        when a run resumes inside an epoch. For losses that change with the epoch (multi-mono-sf
        detaches the disparity in its scene flow loss early on); a no-op by default."""

    def visuals(self, batch: Dict, outputs: Dict) -> Dict[str, torch.Tensor]:
        """Pictures of what the losses see, for TensorBoard (trainer/logger.py logs them beside the
        inputs and the depth, as `visuals/<name>`, at the logging cadence of train and val).

        Returns named image batches [B, N, C, H, W] (B items, N cameras; B may be smaller than the
        batch, e.g. 1: the logger shows the first item), C 1 (grey: masks, error maps) or 3 (RGB),
        values in [0, 1], detached. The trainer calls it under no_grad and autocast, after
        compute_losses, on logging steps only, with the RNG states saved and restored around it:
        an implementation may recompute what the losses did not keep, so that the other steps pay
        nothing for it. Default: no pictures.
        """
        return {}


_REGISTRY: Dict[str, Callable] = {}


def register_model(name: str) -> Callable:
    """Class or factory decorator: `@register_model("surround_depth")`. A factory receives the
    config and returns an Algorithm (e.g. to choose between variants of one model.type)."""
    def decorate(builder: Callable) -> Callable:
        if name in _REGISTRY:
            raise ValueError(f"model.type {name!r} is registered twice")
        _REGISTRY[name] = builder
        return builder
    return decorate


def registered_models() -> Tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


def build_model(cfg, device: Optional[torch.device] = None) -> Algorithm:
    """The algorithm of `cfg.model.type`, on `device` when given."""
    builder = _REGISTRY.get(cfg.model.type)
    if builder is None:
        raise ValueError(f"model.type: no algorithm registered as {cfg.model.type!r}; "
                         f"registered: {list(registered_models())}")
    model = builder(cfg)
    if not isinstance(model, Algorithm):
        raise TypeError(f"the builder of model.type {cfg.model.type!r} returned {type(model).__name__}, "
                        f"not an Algorithm")
    return model.to(device) if device is not None else model
