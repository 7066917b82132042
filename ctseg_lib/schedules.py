"""Optimisers and learning-rate schedules, built from :class:`~ctseg_lib.config.TrainConfig`.

The schedule is a multiplier of the base learning rate evaluated at every optimiser *step*
(not epoch), so warm-up and decay are smooth even with few epochs:

* ``constant``: 1.
* ``cosine``: ``min + (1 - min) * (1 + cos(pi t)) / 2`` (Loshchilov & Hutter, SGDR, ICLR 2017).
* ``poly``: ``(1 - t) ** power`` with power 0.9, the nnU-Net default (Isensee et al., Nature
  Methods 2021).

``t`` runs from 0 to 1 over the steps after the linear warm-up (Goyal et al. 2017).
"""

from __future__ import annotations

import math

import torch

from .config import OptimConfig, ScheduleConfig


def build_optimizer(params, cfg: OptimConfig) -> torch.optim.Optimizer:
    """Adam, AdamW (decoupled weight decay) or SGD with Nesterov momentum."""
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=True,
                               weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.name!r}")  # config validation prevents this


def lr_factor(step: int, total_steps: int, warmup_steps: int, cfg: ScheduleConfig) -> float:
    """Multiplier of the base learning rate at optimiser step ``step`` (0-based)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if cfg.name == "constant":
        return 1.0
    span = max(1, total_steps - warmup_steps)
    t = min(1.0, max(0.0, (step - warmup_steps) / span))
    if cfg.name == "cosine":
        return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))
    if cfg.name == "poly":
        return max(cfg.min_lr_ratio, (1.0 - t) ** cfg.power)
    raise ValueError(f"unknown schedule {cfg.name!r}")


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, steps_per_epoch: int,
                    epochs: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A :class:`~torch.optim.lr_scheduler.LambdaLR` to be stepped once per optimiser step."""
    total = steps_per_epoch * epochs
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total, warmup, cfg))
