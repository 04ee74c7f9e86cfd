"""Optimizer and learning-rate schedule of a config.

Both references use Adam over all parameters with an epoch-based schedule: VFDepth StepLR
(step_size 15, gamma 0.1), the monocular scene flow MultiStepLR (gamma 0.5 at listed epochs).
The scheduler is stepped once per epoch by the trainer.
"""

from typing import Optional

import torch
from torch import nn


def build_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    """Adam over every trainable parameter, lr = training.learning_rate, weight decay =
    training.weight_decay (the references' betas 0.9/0.999 and eps 1e-8)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"model.type {cfg.model.type!r} has no trainable parameters")
    return torch.optim.Adam(params, lr=cfg.training.learning_rate, weight_decay=cfg.training.weight_decay)


def build_scheduler(cfg, optimizer: torch.optim.Optimizer) -> Optional[torch.optim.lr_scheduler.LRScheduler]:
    """training.scheduler: step -> StepLR(scheduler_step_size, scheduler_gamma); multistep ->
    MultiStepLR(scheduler_milestones, scheduler_gamma); none -> None. Epoch-based."""
    t = cfg.training
    if t.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=t.scheduler_step_size, gamma=t.scheduler_gamma)
    if t.scheduler == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(t.scheduler_milestones),
                                                    gamma=t.scheduler_gamma)
    if t.scheduler == "none":
        return None
    raise ValueError(f"training.scheduler: unknown schedule {t.scheduler!r}")


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])
