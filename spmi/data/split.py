"""Seeded semi-supervised partial-label (SSPLL) split and uniform partial-label generation."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class SSPLLSplit:
    """Indices into the full training set, plus the labelled images' candidate sets."""

    labelled_idx: Tensor  # int64 [l]
    candidates: Tensor  # bool [l, c], row i belongs to labelled_idx[i]
    unlabelled_idx: Tensor  # int64 [N_u]
    val_idx: Tensor  # int64 [V], never trained on


def check_split_args(n_train: int, num_classes: int, labelled: int, partial_rate: float, val_size: int) -> None:
    """Raise ValueError (one line) when the split parameters cannot work."""
    if num_classes < 2:
        raise ValueError(f"need at least 2 classes, got {num_classes}")
    if labelled <= 0 or labelled % num_classes:
        raise ValueError(
            f"labelled={labelled} must be a positive multiple of the number of classes ({num_classes}), "
            f"e.g. {num_classes * max(1, labelled // num_classes)}"
        )
    if not 0.0 < partial_rate < 1.0:
        raise ValueError(f"partial rate p={partial_rate} must lie strictly between 0 and 1")
    if val_size < 0:
        raise ValueError(f"val_size={val_size} must be >= 0")
    if labelled + val_size > n_train:
        raise ValueError(
            f"labelled + val_size = {labelled} + {val_size} = {labelled + val_size} "
            f"exceeds the training set size ({n_train})"
        )


def uniform_partial_labels(labels: Tensor, num_classes: int, rate: float, generator: torch.Generator,
                           superclass: Tensor | None = None) -> Tensor:
    """Candidate sets bool [n, c]: each wrong label joins independently w.p. ``rate``; true label always in.

    With ``superclass`` (int [c], each class's superclass) only wrong labels of the true
    label's superclass may join (the authors' ``--hierarchical`` CIFAR-100 protocol,
    utils_algo.py::generate_hierarchical_cv_candidate_labels); the random draws are the same.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate={rate} must lie in [0, 1]")
    labels = labels.reshape(-1).long()
    n = labels.numel()
    cand = torch.rand(n, num_classes, generator=generator, device=generator.device) < rate
    cand = cand.to(labels.device)
    if superclass is not None:
        group = superclass.to(labels.device).long()
        cand &= group[labels].unsqueeze(1) == group.unsqueeze(0)
    cand[torch.arange(n, device=labels.device), labels] = True
    return cand


def _per_class_first(pool: Tensor, pool_labels: Tensor, num_classes: int, k: int) -> Tensor:
    """The first ``k`` entries of ``pool`` of each class (pool is already in random order)."""
    counts = torch.bincount(pool_labels, minlength=num_classes)
    short = (counts < k).nonzero().flatten()
    if short.numel():
        c = int(short[0])
        raise ValueError(
            f"class {c} has only {int(counts[c])} images outside the validation set, "
            f"fewer than labelled/num_classes = {k}"
        )
    order = torch.argsort(pool_labels, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    sorted_labels = pool_labels[order]
    rank = torch.arange(pool.numel()) - starts[sorted_labels]
    return pool[order[rank < k]]


def make_split(
    labels: Tensor,
    num_classes: int,
    labelled: int,
    partial_rate: float,
    val_size: int,
    seed: int,
    include_labelled_in_unlabelled: bool = True,
    superclass: Tensor | None = None,
) -> SSPLLSplit:
    """Seeded split: ``val_size`` random validation images, then ``labelled/num_classes``
    per class from the rest with uniform partial labels; unlabelled = the non-validation
    images (labelled ones included unless ``include_labelled_in_unlabelled`` is False).
    Returned indices are sorted; identical for identical arguments. ``superclass``: partial
    labels within the true label's superclass only (see ``uniform_partial_labels``).
    """
    labels = labels.detach().reshape(-1).long().cpu()
    n = labels.numel()
    check_split_args(n, num_classes, labelled, partial_rate, val_size)
    if n and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}")
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=gen)
    val_idx, rest = perm[:val_size], perm[val_size:]
    lab_idx = _per_class_first(rest, labels[rest], num_classes, labelled // num_classes).sort().values
    candidates = uniform_partial_labels(labels[lab_idx], num_classes, partial_rate, gen, superclass)
    unlab = rest
    if not include_labelled_in_unlabelled:
        keep = torch.ones(n, dtype=torch.bool)
        keep[lab_idx] = False
        unlab = rest[keep[rest]]
    return SSPLLSplit(lab_idx, candidates, unlab.sort().values, val_idx.sort().values)
