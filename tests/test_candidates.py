"""Hand-computed cases for each candidate-set function (spmi/candidates.py)."""

import math

import pytest
import torch

from spmi import candidates as C

T, F = True, False


def tensor(rows):
    return torch.tensor(rows, dtype=torch.float64)


def test_init_paper_threshold_and_argmax_fallback():
    probs = tensor([[0.5, 0.3, 0.2], [0.2, 0.4, 0.4], [1 / 3, 1 / 3, 1 / 3]])
    mask = C.init_unlabelled(probs, "paper")
    # f_k > 1/3; the uniform row has none above 1/3 and falls back to its argmax (index 0)
    assert mask.tolist() == [[T, F, F], [F, T, T], [T, F, F]]


def test_init_official_geometric_mean():
    probs = tensor([[0.5, 0.3, 0.2], [0.6, 0.3, 0.1], [0.0, 0.5, 0.5]])
    mask = C.init_unlabelled(probs, "official")
    # gm(0.5,0.3,0.2) = 0.03^(1/3) = 0.3107 -> {0}; gm(0.6,0.3,0.1) = 0.018^(1/3) = 0.2621 -> {0,1};
    # a zero probability never joins, the others do
    assert mask.tolist() == [[T, F, F], [T, T, F], [F, T, T]]


def test_init_rules_differ_and_unknown_rule():
    probs = tensor([[0.05, 0.32, 0.63]])
    assert C.init_unlabelled(probs, "paper").tolist() == [[F, F, T]]
    assert C.init_unlabelled(probs, "official").tolist() == [[F, T, T]]   # gm = 0.2160
    with pytest.raises(ValueError, match="unknown init rule"):
        C.init_unlabelled(probs, "median")


def test_expand_adds_labels_above_prior_and_respects_allowed():
    probs = tensor([[0.3, 0.4, 0.3]])
    prior = tensor([0.2, 0.5, 0.3])
    mask = torch.tensor([[F, F, T]])
    # 0.3 > 0.2 joins; 0.4 < 0.5 and 0.3 == 0.3 do not; existing members stay
    assert C.expand(probs, mask, prior).tolist() == [[T, F, T]]
    allowed = torch.tensor([[F, T, T]])
    assert C.expand(probs, mask, prior, allowed=allowed).tolist() == [[F, F, T]]


def test_kl_scores_closed_form():
    probs = tensor([[0.5, 0.3, 0.2]])
    mask = torch.tensor([[T, T, F]])
    g = C.information_scores(probs, mask, "kl")[0]
    # p~ = (0.625, 0.375, -): G_k = -log(1 - p~_k)
    assert g[0].item() == pytest.approx(-math.log(0.375))
    assert g[1].item() == pytest.approx(-math.log(0.625))
    assert math.isnan(g[2].item())


def test_official_scores_hand_computed():
    probs = tensor([[0.5, 0.3, 0.2]])
    mask = torch.tensor([[T, T, F]])
    g = C.information_scores(probs, mask, "official")[0]
    # p~ = (0.625, 0.375, 0). Q rows: k=0 -> (0,1,0); k=1 -> (1,0,0); k=2 -> p~.
    # log_softmax over k, column 0 of (0, 1, 0.625): lse = log(1 + e + e^0.625) = 1.720366
    # column 1 of (1, 0, 0.375): lse = log(e + 1 + e^0.375) = 1.643491
    # sum_j p~ log p~ = -0.661563
    # G_0 = -0.661563 + 0.625*1.720366 + 0.375*(1.643491 - 1) = 0.654977
    # G_1 = -0.661563 + 0.625*(1.720366 - 1) + 0.375*1.643491 = 0.404977
    assert g[0].item() == pytest.approx(0.654977, abs=1e-5)
    assert g[1].item() == pytest.approx(0.404977, abs=1e-5)
    assert math.isnan(g[2].item())


def test_unknown_score():
    with pytest.raises(ValueError, match="unknown score"):
        C.information_scores(tensor([[0.5, 0.5]]), torch.tensor([[T, T]]), "entropy")


def test_condense_fires_only_above_tau_and_removes_argmin():
    probs = tensor([[0.5, 0.3, 0.2]])
    mask = torch.tensor([[T, T, F]])
    # kl: G = (0.981, 0.470); max > 0.5 fires and removes label 1; tau = 1 does not fire
    assert C.condense(probs, mask, 0.5, "kl").tolist() == [[T, F, F]]
    assert C.condense(probs, mask, 1.0, "kl").tolist() == [[T, T, F]]
    # official: G = (0.655, 0.405)
    assert C.condense(probs, mask, 0.6, "official").tolist() == [[T, F, F]]
    assert C.condense(probs, mask, 0.7, "official").tolist() == [[T, T, F]]


def test_condense_official_removes_runner_up_kl_removes_weakest():
    probs = tensor([[0.97, 0.02, 0.01, 0.0]])
    mask = torch.tensor([[T, T, T, F]])
    # at most one label per pass, and which one depends on the score reading
    assert C.condense(probs, mask, 0.0, "kl").tolist() == [[T, T, F, F]]
    assert C.condense(probs, mask, 0.0, "official").tolist() == [[T, F, T, F]]


def test_condense_keeps_singletons_and_empty_rows():
    probs = tensor([[0.99, 0.01], [0.5, 0.5]])
    mask = torch.tensor([[T, F], [F, F]])
    for score in C.SCORES:
        assert C.condense(probs, mask, 0.0, score).tolist() == mask.tolist()


def test_condense_rows_independent():
    probs = tensor([[0.5, 0.3, 0.2], [0.4, 0.35, 0.25]])
    mask = torch.tensor([[T, T, T], [T, T, T]])
    out = C.condense(probs, mask, 0.9, "kl")
    # row 0: max G = -log(0.5) = 0.693 < 0.9 -> unchanged; row 1 likewise (0.51)
    assert out.tolist() == mask.tolist()
    out = C.condense(probs, mask, 0.6, "kl")
    assert out.tolist() == [[T, T, F], [T, T, T]]


def test_official_scores_chunked_equal_unchunked(monkeypatch):
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(50, 7, generator=g), dim=1)
    mask = torch.rand(50, 7, generator=g) > 0.4
    full = C.information_scores(probs, mask, "official")
    monkeypatch.setattr(C, "_SCORE_CHUNK_ELEMS", 3 * 49)
    chunked = C.information_scores(probs, mask, "official")
    assert torch.equal(full.isnan(), chunked.isnan())
    assert torch.allclose(full.nan_to_num(), chunked.nan_to_num())


def test_official_score_matches_reference_formula():
    """The authors' expression: KLDivLoss(log_softmax(Q, dim=k), p~).sum(j)."""
    g = torch.Generator().manual_seed(1)
    probs = torch.softmax(torch.randn(20, 5, generator=g, dtype=torch.float64), dim=1)
    mask = torch.rand(20, 5, generator=g) > 0.3
    mask[:, 0] = True
    ours = C.information_scores(probs, mask, "official")
    pt = probs * mask
    pt = pt / pt.sum(1, keepdim=True)
    q = pt.unsqueeze(1).repeat(1, 5, 1)
    q[:, torch.arange(5), torch.arange(5)] = 0
    q = q / q.sum(2, keepdim=True).clamp_min(1e-300)
    ref = torch.nn.KLDivLoss(reduction="none")(torch.log_softmax(q, dim=1), pt.unsqueeze(1).repeat(1, 5, 1)).sum(2)
    assert torch.allclose(ours[mask], ref[mask])


def test_class_prior_is_mean():
    probs = tensor([[0.5, 0.5, 0.0], [0.1, 0.2, 0.7]])
    assert C.class_prior(probs).tolist() == pytest.approx([0.3, 0.35, 0.35])
