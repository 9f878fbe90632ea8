"""A network's forward cost: FLOPs (2 x multiply-adds) of its conv and linear layers."""

from __future__ import annotations

import functools

import torch
from torch import nn

from spmi.models import create_model


def forward_flops(model: nn.Module, x: torch.Tensor) -> float:
    """FLOPs of one forward of ``model``'s conv and linear layers, per image of batch ``x``
    (any device, ``meta`` included: only the output shapes are used)."""
    total = 0.0

    def hook(mod: nn.Module, inp: tuple, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            k = mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
            total += 2 * k * out.numel()
        elif isinstance(mod, nn.Linear):
            total += 2 * mod.in_features * out.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    finally:
        model.train(was)
        for h in handles:
            h.remove()
    return total / len(x)


@functools.cache
def model_gflop(name: str, num_classes: int, channels: int, size: int) -> float:
    """Forward GFLOPs per ``size`` x ``size`` image of the registered network ``name``,
    counted on the meta device (no weights, no arithmetic)."""
    with torch.device("meta"):
        model = create_model(name, num_classes, channels)
        x = torch.empty(2, channels, size, size)
    return forward_flops(model, x) / 1e9
