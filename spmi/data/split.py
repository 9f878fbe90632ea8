"""Seeded semi-supervised partial-label (SSPLL) split and uniform partial-label generation."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

VAL_LABELS = ("true", "partial")


@dataclass
class SSPLLSplit:
    """Indices into the full training set, plus the candidate sets of the labelled images
    and of both validation sets (never trained on): the held-out images (``val_idx``) and
    those carved from the labelled budget (``carved_idx``, empty unless asked for)."""

    labelled_idx: Tensor  # int64 [l - K], trained on
    candidates: Tensor  # bool [l - K, c], row i belongs to labelled_idx[i]
    unlabelled_idx: Tensor  # int64 [N_u]
    val_idx: Tensor  # int64 [V], held out
    val_candidates: Tensor  # bool [V, c]: {y} (val_labels "true") or drawn like the training data's
    carved_idx: Tensor  # int64 [K], carved from the labelled images
    carved_candidates: Tensor  # bool [K, c], the candidate sets they were drawn with


def check_split_args(n_train: int, num_classes: int, labelled: int, partial_rate: float, val_size: int,
                     val_from_labelled: int = 0, val_labels: str = "true") -> None:
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
    check_validation_args(num_classes, labelled, val_size, val_from_labelled, val_labels)
    if labelled + val_size > n_train:
        raise ValueError(
            f"labelled + val_size = {labelled} + {val_size} = {labelled + val_size} "
            f"exceeds the training set size ({n_train})"
        )


def check_validation_args(num_classes: int, labelled: int, val_size: int, val_from_labelled: int,
                          val_labels: str) -> None:
    """The validation options (``--val-from-labelled``, ``--val-labels``), without data."""
    k = val_from_labelled
    if val_labels not in VAL_LABELS:
        raise ValueError(f"--val-labels {val_labels!r} is not valid; choose one of: {', '.join(VAL_LABELS)}")
    if k < 0:
        raise ValueError(f"--val-from-labelled {k} must be >= 0 (0: no validation images from the labelled ones)")
    if k % num_classes:
        raise ValueError(f"--val-from-labelled {k} must be a multiple of the {num_classes} classes (K/c per class, "
                         f"like the labelled images), e.g. {num_classes * max(1, round(k / num_classes))}")
    if k >= labelled:
        raise ValueError(f"--val-from-labelled {k} must be smaller than --labelled {labelled}: the method "
                         f"trains on the other l - K labelled images")
    if val_labels == "partial" and val_size == 0:
        raise ValueError("--val-labels partial gives the held-out validation images candidate sets, but "
                         "--val-size is 0; hold some out with --val-size N or drop --val-labels partial")


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
    val_from_labelled: int = 0,
    val_labels: str = "true",
) -> SSPLLSplit:
    """Seeded split: ``val_size`` random validation images, then ``labelled/num_classes``
    per class from the rest with uniform partial labels; unlabelled = the non-validation
    images (labelled ones included unless ``include_labelled_in_unlabelled`` is False).
    Returned indices are sorted; identical for identical arguments. ``superclass``: partial
    labels within the true label's superclass only (see ``uniform_partial_labels``).

    Validation: ``val_from_labelled`` K carves K of the labelled images (K/c per class,
    drawn like the labelled images: the first of each class in a seeded random order) with
    their candidate sets into ``carved_idx``; the method trains on the other l - K, and the
    carved images leave the unlabelled set too. ``val_labels`` "partial" draws candidate
    sets for the held-out images like the training data's (rate p, the same generator),
    "true" gives them {y}. Both draw from the split's generator only after everything
    the default split draws, always in the same order, so that neither option changes the
    default split, and each leaves what the other draws as it is.
    """
    labels = labels.detach().reshape(-1).long().cpu()
    n = labels.numel()
    check_split_args(n, num_classes, labelled, partial_rate, val_size, val_from_labelled, val_labels)
    if n and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}")
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=gen)
    val_idx, rest = perm[:val_size], perm[val_size:]
    lab_idx = _per_class_first(rest, labels[rest], num_classes, labelled // num_classes).sort().values
    candidates = uniform_partial_labels(labels[lab_idx], num_classes, partial_rate, gen, superclass)
    # only after the default split's draws: the carve's order, then the held-out candidate sets
    lab_order = torch.randperm(len(lab_idx), generator=gen)
    val_idx = val_idx.sort().values
    if val_labels == "partial":
        val_candidates = uniform_partial_labels(labels[val_idx], num_classes, partial_rate, gen, superclass)
    else:
        val_candidates = torch.nn.functional.one_hot(labels[val_idx], num_classes).bool()
    carved = torch.zeros(len(lab_idx), dtype=torch.bool)
    per_class = val_from_labelled // num_classes
    carved[_per_class_first(lab_order, labels[lab_idx][lab_order], num_classes, per_class)] = True
    unlab = rest
    if not include_labelled_in_unlabelled or val_from_labelled:
        keep = torch.ones(n, dtype=torch.bool)
        keep[lab_idx[carved] if include_labelled_in_unlabelled else lab_idx] = False
        unlab = rest[keep[rest]]
    return SSPLLSplit(lab_idx[~carved], candidates[~carved], unlab.sort().values, val_idx, val_candidates,
                      lab_idx[carved], candidates[carved])
