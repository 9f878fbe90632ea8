"""Tests of the seeded SSPLL split and uniform partial-label generation."""

from __future__ import annotations

import math

import pytest
import torch

from spmi.data import check_split_args, make_split, uniform_partial_labels

C = 10


def _labels(n: int = 3000, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, C, (n,), generator=torch.Generator().manual_seed(seed))


def _split(labels: torch.Tensor, seed: int = 1, **kw):
    args = {"num_classes": C, "labelled": 100, "partial_rate": 0.3, "val_size": 500, "seed": seed} | kw
    return make_split(labels, **args)


def test_shapes_and_per_class_counts():
    labels = _labels()
    s = _split(labels)
    assert s.labelled_idx.dtype == s.unlabelled_idx.dtype == s.val_idx.dtype == torch.int64
    assert s.candidates.dtype == torch.bool and s.candidates.shape == (100, C)
    assert s.val_idx.numel() == 500 and s.val_idx.unique().numel() == 500
    assert torch.equal(torch.bincount(labels[s.labelled_idx], minlength=C), torch.full((C,), 10))
    assert s.labelled_idx.unique().numel() == 100


def test_val_is_held_out_and_unlabelled_protocol():
    labels = _labels()
    s = _split(labels)
    val, lab, unl = (set(t.tolist()) for t in (s.val_idx, s.labelled_idx, s.unlabelled_idx))
    assert not val & lab and not val & unl
    assert lab <= unl and len(unl) == len(labels) - 500 == s.unlabelled_idx.numel()
    e = _split(labels, include_labelled_in_unlabelled=False)
    assert torch.equal(e.labelled_idx, s.labelled_idx) and torch.equal(e.val_idx, s.val_idx)
    unl_e = set(e.unlabelled_idx.tolist())
    assert not unl_e & lab and not unl_e & val and len(unl_e) == len(labels) - 600


def test_true_label_always_candidate():
    labels = _labels()
    s = _split(labels, partial_rate=0.05)
    assert s.candidates[torch.arange(100), labels[s.labelled_idx]].all()


def test_seed_determinism():
    labels = _labels()
    a, b, other = _split(labels, seed=7), _split(labels, seed=7), _split(labels, seed=8)
    for f in ("labelled_idx", "candidates", "unlabelled_idx", "val_idx"):
        assert torch.equal(getattr(a, f), getattr(b, f))
    assert not torch.equal(a.labelled_idx, other.labelled_idx)
    assert not torch.equal(a.val_idx, other.val_idx)


def test_zero_val_size():
    labels = _labels(200)
    s = _split(labels, val_size=0, labelled=50)
    assert s.val_idx.numel() == 0 and s.unlabelled_idx.numel() == 200


def test_partial_label_statistics():
    n, p = 20000, 0.3
    labels = _labels(n, seed=3)
    cand = uniform_partial_labels(labels, C, p, torch.Generator().manual_seed(0))
    assert cand.shape == (n, C) and cand.dtype == torch.bool
    assert cand[torch.arange(n), labels].all()
    # mean size: 1 + Binomial(c-1, p); tolerance of 6 standard errors
    sizes = cand.sum(1).double()
    se = math.sqrt((C - 1) * p * (1 - p) / n)
    assert abs(sizes.mean().item() - (1 + (C - 1) * p)) < 6 * se
    # each wrong label joins with frequency p
    for j in range(C):
        wrong = labels != j
        m = int(wrong.sum())
        assert abs(cand[wrong, j].double().mean().item() - p) < 6 * math.sqrt(p * (1 - p) / m)
    # singletons occur with probability (1-p)^(c-1)
    q = (1 - p) ** (C - 1)
    singles = (sizes == 1).double().mean().item()
    assert singles > 0 and abs(singles - q) < 6 * math.sqrt(q * (1 - q) / n)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((1000, 10, 25, 0.3, 0), r"labelled=25 must be a positive multiple of the number of classes \(10\)"),
        ((1000, 10, 0, 0.3, 0), r"labelled=0 must be a positive multiple"),
        ((1000, 10, 40, 0.0, 0), r"partial rate p=0.0 must lie strictly between 0 and 1"),
        ((1000, 10, 40, 1.0, 0), r"partial rate p=1.0 must lie strictly between 0 and 1"),
        ((1000, 10, 40, 0.3, -1), r"val_size=-1 must be >= 0"),
        ((1000, 10, 40, 0.3, 961), r"labelled \+ val_size = 40 \+ 961 = 1001 exceeds the training set size \(1000\)"),
    ],
)
def test_check_split_args_errors(args, message):
    with pytest.raises(ValueError, match=message):
        check_split_args(*args)
    check_split_args(1000, 10, 40, 0.3, 960)


def test_class_too_small_outside_val():
    labels = torch.cat([torch.zeros(50, dtype=torch.long), torch.ones(3, dtype=torch.long)])
    with pytest.raises(ValueError, match=r"class 1 has only 3 images outside the validation set, fewer than"):
        make_split(labels, 2, 10, 0.3, 0, seed=0)
