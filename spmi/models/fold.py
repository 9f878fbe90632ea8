"""Inference copies of a network with BatchNorm folded into the preceding layer.

In eval mode a BatchNorm that directly follows a convolution or linear layer is an affine
map of that layer's output, so it folds into the layer's weight and bias: one op less per
layer and no extra pass over the activations. Used by the label-channel pass and
evaluation; training always runs the unfolded network.
"""

from __future__ import annotations

import copy

import torch
from torch import fx, nn
from torch.fx.experimental.optimization import fuse


class _Tracer(fx.Tracer):
    """Every BatchNorm variant is one opaque module (the distributed ones have Python
    control flow); only plain BatchNorm1d/2d after a conv/linear layer are folded."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, nn.modules.batchnorm._BatchNorm) or super().is_leaf_module(m, qualname)


def fold_batchnorm(model: nn.Module, channels_last: bool = False) -> nn.Module:
    """An eval-mode copy of ``model`` whose conv/linear -> BatchNorm pairs are folded (a BN
    after another op, e.g. pre-activation WRN's BN-ReLU-conv, stays as it is). ``model``
    is unchanged; the copy shares no parameters with it."""
    model = copy.deepcopy(model).eval()
    graph = _Tracer().trace(model)
    folded = fuse(fx.GraphModule(model, graph), inplace=True, no_trace=True)
    for p in folded.parameters():
        p.requires_grad_(False)
    if channels_last:
        folded = folded.to(memory_format=torch.channels_last)
    return folded.eval()
