"""Optimizer and learning-rate schedule from a :class:`TrainConfig`.

Weight decay applies to weights of convolutions and linear layers only: decaying normalization scales
and biases pulls them towards zero for no regularisation benefit, so they go in a group without decay.
"""

from __future__ import annotations

import torch
from torch import nn

from sepconv.train.config import TrainConfig

__all__ = ["build_optimizer", "build_scheduler", "parameter_groups"]


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: multi-dimensional weights with ``weight_decay``, biases and norm parameters without.

    >>> groups = parameter_groups(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)), 0.1)
    >>> [(len(group["params"]), group["weight_decay"]) for group in groups]
    [(1, 0.1), (3, 0.0)]
    """
    decayed: list[nn.Parameter] = []
    not_decayed: list[nn.Parameter] = []
    for parameter in model.parameters():
        if not parameter.requires_grad:
            continue
        (decayed if parameter.ndim > 1 else not_decayed).append(parameter)
    return [
        {"params": decayed, "weight_decay": weight_decay},
        {"params": not_decayed, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW or SGD (Nesterov momentum) over :func:`parameter_groups`."""
    groups = parameter_groups(model, config.weight_decay)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0)
    return torch.optim.AdamW(groups, lr=config.lr)


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-step schedule: one-cycle (warm-up to ``lr`` then cosine down), cosine from ``lr``, or constant.

    One-cycle warms up for a quarter of the steps; on very short runs (fewer than 6 steps) the warm-up
    is stretched to 1.5 steps, because ``OneCycleLR`` divides by the length of each phase and a
    warm-up of exactly one step (or none) is a division by zero.

    >>> model = nn.Linear(2, 2)
    >>> for steps in (1, 2, 3, 4, 5):
    ...     optimizer = build_optimizer(model, TrainConfig(lr=0.1))
    ...     scheduler = build_scheduler(optimizer, TrainConfig(lr=0.1), steps)
    ...     for _ in range(steps):
    ...         optimizer.step(); scheduler.step()
    """
    if config.schedule == "onecycle":
        total = max(total_steps, 2)
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=config.lr, total_steps=total, pct_start=max(0.25, 1.5 / total), div_factor=10
        )
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps, 1))
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
