"""Activation checkpointing (``training.activation_checkpointing``): run a part of the forward pass
without keeping its intermediate activations and recompute them when the backward pass needs them.

Memory then holds only the part's inputs and outputs, at the cost of running its forward twice.
The recomputation is exact (same inputs, same random state), with one trap handled here: a
BatchNorm layer in training mode would update its running statistics a second time during the
recomputation, so those layers are frozen (momentum 0, the batch counter restored) while it runs.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Optional

import torch.nn as nn
from torch.utils.checkpoint import checkpoint


@contextlib.contextmanager
def frozen_batchnorm_statistics(module: Optional[nn.Module]) -> Iterator[None]:
    """BatchNorm layers of module normalise with the batch statistics as usual but leave their
    running mean, variance and batch counter untouched."""
    layers = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)] if module else []
    saved = [(m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone()) for m in layers]
    for m in layers:
        m.momentum = 0.0          # running = (1 - 0)·running + 0·batch: unchanged (momentum None would average)
    try:
        yield
    finally:
        for m, (momentum, tracked) in zip(layers, saved):
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)


def recomputed(fn: Callable, *args, enabled: bool = True, module: Optional[nn.Module] = None):
    """fn(*args), recomputed in the backward pass instead of keeping its activations when enabled
    (and when autograd records anything). module: the nn.Module whose BatchNorm layers fn runs."""
    if not enabled:
        return fn(*args)

    def contexts():
        return contextlib.nullcontext(), frozen_batchnorm_statistics(module)

    return checkpoint(fn, *args, use_reentrant=False, context_fn=contexts)
