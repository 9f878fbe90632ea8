"""The partial-label validation criteria (spmi.metrics): covering rate and approximated
accuracy on hand-made logits, the p = 0 identity, the inequalities, and the batched pass."""

import contextlib
import math

import pytest
import torch
from torch import nn

from spmi.data import uniform_partial_labels
from spmi.evaluate import score_sums
from spmi.metrics import approximated, approximated_accuracy, covered, covering_rate, singleton_sets

C = 4


def sets(*rows):
    out = torch.zeros(len(rows), C, dtype=torch.bool)
    for i, row in enumerate(rows):
        out[i, list(row)] = True
    return out


def test_hand_made_values():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0],   # y 0, S {0, 2}: right, covered
                           [0.0, 3.0, 0.5, 0.0],    # y 2, S {1, 2}: wrong, covered
                           [0.0, 0.0, 5.0, 0.0],    # y 3, S {0, 3}: wrong, not covered
                           [1.0, 0.0, 0.0, 4.0]])   # y 3, S {3}: right, covered
    cand = sets({0, 2}, {1, 2}, {0, 3}, {3})
    pred = logits.argmax(dim=1)
    assert covered(pred, cand).tolist() == [True, True, False, True]
    expect = [math.exp(2) / (math.exp(2) + 1), math.exp(3) / (math.exp(3) + math.exp(0.5)), 0.0, 1.0]
    assert approximated(logits, pred, cand).tolist() == pytest.approx(expect, abs=1e-6)
    assert covering_rate(logits, cand) == 0.75
    assert approximated_accuracy(logits, cand) == pytest.approx(sum(expect) / 4, abs=1e-6)


def test_matches_the_complement_form():
    """PLENCH writes apx as 1 - sum over k != y^ of the renormalised restricted softmax."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(200, 10, generator=g) * 3
    cand = uniform_partial_labels(torch.randint(0, 10, (200,), generator=g), 10, 0.4, g)
    conf = torch.softmax(logits, dim=1) * cand
    conf = conf / conf.sum(dim=1, keepdim=True)
    pred = logits.argmax(dim=1)
    others = torch.ones_like(conf)
    others[torch.arange(200), pred] = 0
    assert torch.allclose(approximated(logits, pred, cand), 1 - (others * conf).sum(dim=1), atol=1e-6)


def test_p0_both_equal_clean_accuracy_exactly():
    g = torch.Generator().manual_seed(1)
    logits, labels = torch.randn(500, 10, generator=g), torch.randint(0, 10, (500,), generator=g)
    accuracy = float((logits.argmax(dim=1) == labels).float().mean())
    for cand in (uniform_partial_labels(labels, 10, 0.0, g), singleton_sets(labels, 10)):
        assert cand.sum(dim=1).eq(1).all()
        assert covering_rate(logits, cand) == accuracy
        assert approximated_accuracy(logits, cand) == accuracy


@pytest.mark.parametrize("rate", [0.1, 0.3, 0.7])
def test_inequalities_when_the_true_label_is_a_candidate(rate):
    g = torch.Generator().manual_seed(2)
    logits, labels = torch.randn(1000, 10, generator=g) * 2, torch.randint(0, 10, (1000,), generator=g)
    cand = uniform_partial_labels(labels, 10, rate, g)
    pred = logits.argmax(dim=1)
    cov, apx, right = covered(pred, cand), approximated(logits, pred, cand), pred == labels
    assert (apx <= cov.float()).all() and (cov >= right).all()  # per image
    # covered: y^ has the largest logit within S, so its renormalised share is at least 1/|S|
    assert (apx[cov] >= 1 / cand[cov].sum(dim=1) - 1e-6).all()
    accuracy = float(right.float().mean())
    assert approximated_accuracy(logits, cand) <= covering_rate(logits, cand)
    assert covering_rate(logits, cand) >= accuracy
    assert covering_rate(logits, cand) > accuracy  # some wrong predictions fall inside S


def test_extreme_logits_and_empty_sets_stay_finite():
    logits = torch.tensor([[0.0, -1000.0, -2000.0, -3000.0], [1000.0, 0.0, 0.0, 0.0], [1.0, 2.0, 3.0, 4.0]])
    cand = sets({1, 2}, {1, 2}, set())
    apx = approximated(logits, logits.argmax(dim=1), cand)
    assert apx.tolist() == [0.0, 0.0, 0.0]
    apx = approximated(logits[:1], torch.tensor([1]), sets({1, 2}))  # S's softmax underflows to 0 in float32
    assert apx.tolist() == [1.0]


def test_score_sums_one_pass_in_uneven_batches():
    g = torch.Generator().manual_seed(3)
    torch.manual_seed(3)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 10))
    images = torch.randint(0, 256, (11, 1, 4, 4), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (11,), generator=g)
    cand = uniform_partial_labels(labels, 10, 0.5, g)
    calls = []
    model.register_forward_hook(lambda m, i, o: calls.append(len(o)))
    sums = score_sums(model, images, labels, cand, lambda b: b.float() / 255, 4, contextlib.nullcontext)
    assert calls == [4, 4, 3]  # one forward per batch for all three sums
    with torch.no_grad():
        logits = model(images.float() / 255)
    assert sums.dtype == torch.float64
    assert sums[0] == (logits.argmax(dim=1) == labels).sum()
    assert float(sums[1]) / 11 == pytest.approx(covering_rate(logits, cand))
    assert float(sums[2]) / 11 == pytest.approx(approximated_accuracy(logits, cand), abs=1e-6)
