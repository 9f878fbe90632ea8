"""Optimiser and the per-epoch cosine learning-rate schedule of the authors' code."""

from __future__ import annotations

import math

import torch
from torch import nn


def build_optimizer(model: nn.Module, lr: float, momentum: float, weight_decay: float) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)


def cosine_lr(epoch: int, epochs: int, lr: float, min_ratio: float) -> float:
    """lr_t = eta_min + (lr - eta_min)(1 + cos(pi t / T)) / 2 with eta_min = min_ratio * lr."""
    eta_min = min_ratio * lr
    return eta_min + (lr - eta_min) * (1.0 + math.cos(math.pi * epoch / epochs)) / 2.0


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
