"""Validation criteria that need only candidate sets (no true labels), per image.

For an image x with candidate set S (bool row over the c classes), network outputs z
(logits) and prediction y^ = argmax_k z_k (PLENCH, Wang et al., ICLR 2025):

- covering:      cov(x) = [y^ in S]; its mean over a set is the *covering rate*.
- approximated:  apx(x) = [y^ in S] * softmax(z)_{y^} / sum_{k in S} softmax(z)_k, i.e. the
  softmax restricted to S and renormalised, read at y^ (0 when y^ is outside S); its mean
  is the *approximated accuracy*, an estimate of accuracy from partial labels.

With the true label y: correct(x) = [y^ = y]. Properties (each per image, so also for the
means): apx <= cov (a renormalised probability is at most 1); cov >= correct whenever y in
S; and with S = {y} (p = 0) apx = cov = correct exactly (the restricted softmax of a single
class is 1). The restricted softmax is computed as softmax of z with the classes outside S
masked to -inf, which equals the renormalised restriction and cannot underflow to 0/0.
"""

from __future__ import annotations

import torch
from torch import Tensor


def covered(pred: Tensor, candidates: Tensor) -> Tensor:
    """cov = [y^ in S] per row: bool [N] (``pred`` int [N], ``candidates`` bool [N, c])."""
    return candidates.gather(1, pred.unsqueeze(1)).squeeze(1)


def approximated(logits: Tensor, pred: Tensor, candidates: Tensor) -> Tensor:
    """apx per row: float [N], softmax(z) restricted to S and renormalised, read at y^
    (0 where y^ is outside S, also for an empty S)."""
    restricted = torch.softmax(logits.float().masked_fill(~candidates, float("-inf")), dim=1)
    at_pred = restricted.gather(1, pred.unsqueeze(1)).squeeze(1)
    return torch.where(covered(pred, candidates), at_pred, torch.zeros_like(at_pred))


def covering_rate(logits: Tensor, candidates: Tensor) -> float:
    """Mean of cov over the rows of ``logits`` [N, c] (NaN for N = 0)."""
    return float(covered(logits.argmax(dim=1), candidates).float().mean())


def approximated_accuracy(logits: Tensor, candidates: Tensor) -> float:
    """Mean of apx over the rows of ``logits`` [N, c] (NaN for N = 0)."""
    return float(approximated(logits, logits.argmax(dim=1), candidates).mean())


def singleton_sets(labels: Tensor, num_classes: int) -> Tensor:
    """Candidate sets {y} (bool [N, c]): the sets of images whose true labels are given."""
    return torch.nn.functional.one_hot(labels.long(), num_classes).bool()
