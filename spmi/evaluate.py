"""Batched inference: how many images of a labelled tensor a model classifies right, and
the partial-label validation criteria (``spmi.metrics``) in the same pass."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

import torch
from torch import Tensor, nn

from spmi import metrics


@torch.inference_mode()
def count_correct(model: nn.Module, images: Tensor, labels: Tensor, prepare: Callable[[Tensor], Tensor],
                  batch_size: int, autocast: Callable[[], AbstractContextManager]) -> Tensor:
    """Number of ``images`` (uint8, on the model's device) whose argmax equals ``labels``
    (an int64 scalar tensor on that device)."""
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=images.device)
    for start in range(0, len(images), batch_size):
        x = prepare(images[start:start + batch_size])
        with autocast():
            pred = model(x).argmax(dim=1)
        correct += (pred == labels[start:start + batch_size]).sum()
    model.train(was_training)
    return correct



@torch.inference_mode()
def score_sums(model: nn.Module, images: Tensor, labels: Tensor, candidates: Tensor,
               prepare: Callable[[Tensor], Tensor], batch_size: int,
               autocast: Callable[[], AbstractContextManager]) -> Tensor:
    """One pass over ``images``: float64 [3], the sums over the images of correct, cov and
    apx (``spmi.metrics``; ``candidates`` bool [N, c], the images' candidate sets)."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=images.device)
    for start in range(0, len(images), batch_size):
        x = prepare(images[start:start + batch_size])
        with autocast():
            logits = model(x)
        pred = logits.argmax(dim=1)
        cand = candidates[start:start + batch_size]
        sums += torch.stack([(pred == labels[start:start + batch_size]).sum().double(),
                             metrics.covered(pred, cand).sum().double(),
                             metrics.approximated(logits, pred, cand).double().sum()])
    model.train(was_training)
    return sums
