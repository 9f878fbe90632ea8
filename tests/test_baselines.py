"""PRODEN/CC/POP + FixMatch baselines on constructed logits (no data, no network)."""

import math

import pytest
import torch
from torch import nn

from spmi.comm import Comm
from spmi.methods import get_method, list_methods
from spmi.methods.base import Batch, MethodContext
from spmi.methods.fixmatch import FixMatchPLL, pseudo_labels, write_rows
from spmi.methods.pop_fixmatch import POPFixMatch, purification_epoch, purify
from spmi.options import build

T, F = True, False
# every registered FixMatch-based method (PRODEN/CC/POP + FixMatch and any added later)
FIXMATCH_FAMILY = [m for m in list_methods() if issubclass(get_method(m), FixMatchPLL)]
CANDS = torch.tensor([[T, T, F], [T, T, T], [F, T, T]])


def make(name: str, **opts):
    ctx = MethodContext(
        num_classes=3, device=torch.device("cpu"), candidates=CANDS.clone(),
        lab_targets=torch.tensor([0, 1, 2]), unl_targets=torch.tensor([0, 1, 2, 2]),
        unl_to_lab=torch.tensor([0, 1, -1, -1]), epochs=10, comm=Comm())
    cls = get_method(name)
    return cls(build(cls.Options, opts, name), ctx)


class Fixed(nn.Module):
    """'Model' whose input already is the logits."""
    def forward(self, x):
        return x


def log_probs(rows):
    return torch.log(torch.tensor(rows))


LAB = log_probs([[0.5, 0.3, 0.2], [0.2, 0.3, 0.5], [0.6, 0.1, 0.3]])
# weak views: rows 0 (labelled 0, S={0,1}) and 2 confident, 1 and 3 not
WEAK = log_probs([[0.05, 0.02, 0.93], [0.4, 0.3, 0.3], [0.01, 0.01, 0.98], [0.3, 0.6, 0.1]])
STRONG = log_probs([[0.6, 0.2, 0.2], [0.3, 0.3, 0.4], [0.1, 0.1, 0.8], [0.2, 0.2, 0.6]])


def batch(lab=LAB, weak=WEAK, strong=STRONG, lab_pos=(0, 1, 2), unl_pos=(0, 1, 2, 3)):
    views = {("lab", "strong"): lab, ("unl", "weak"): weak, ("unl", "strong"): strong}
    return Batch(torch.tensor(lab_pos), torch.tensor(unl_pos),
                 lambda part, kind, pos: views[part, kind][pos] if (part, kind) in views
                 else pytest.fail(f"unexpected view {part}/{kind}"))


# -- FixMatch ------------------------------------------------------------------------
def test_fixmatch_term_threshold_restriction_and_lambda():
    m = make("cc_fixmatch", fixmatch_threshold=0.9, lambda_u=2.0)
    loss, parts = m.loss(Fixed(), batch(), epoch=0)
    # row 0 is labelled with S={0,1}: restricted max is 0.05 < 0.9 -> masked out;
    # row 2 (unlabelled) passes with label 2; rows 1, 3 are below the threshold
    u = -math.log(0.8) / 4
    assert parts["unl"].item() == pytest.approx(u, rel=1e-5)
    assert loss.item() == pytest.approx(parts["lab"].item() + 2.0 * u, rel=1e-5)
    d = m.diagnostics()
    assert d["fixmatch/mask_rate"] == 0.25 and d["fixmatch/pseudo_acc"] == 1.0

    free = make("cc_fixmatch", fixmatch_threshold=0.9, restrict_to_candidates=False)
    _, parts = free.loss(Fixed(), batch(), epoch=0)
    # unrestricted, row 0 passes with label 2 (wrong: its target is 0)
    assert parts["unl"].item() == pytest.approx(-(math.log(0.2) + math.log(0.8)) / 4, rel=1e-5)
    d = free.diagnostics()
    assert d["fixmatch/mask_rate"] == 0.5 and d["fixmatch/pseudo_acc"] == 0.5


def test_restricted_pseudo_label_takes_max_within_the_set():
    allowed = torch.tensor([[T, T, F], [T, T, T]])
    conf, label = pseudo_labels(log_probs([[0.3, 0.1, 0.6], [0.3, 0.1, 0.6]]), allowed)
    assert label.tolist() == [0, 2]
    assert conf.tolist() == pytest.approx([0.3, 0.6], rel=1e-6)


def test_threshold_is_inclusive():
    q_max = torch.softmax(WEAK[2], dim=0).max()  # float32, as the method computes it
    above = torch.nextafter(q_max, torch.tensor(2.0))
    for threshold, masked in ((float(q_max), 1), (float(above), 0)):
        m = make("cc_fixmatch", fixmatch_threshold=threshold)
        _, parts = m.loss(Fixed(), batch(unl_pos=(2,)), epoch=0)
        assert m.diagnostics()["fixmatch/mask_rate"] == masked
        assert parts["unl"].item() == pytest.approx(-math.log(0.8) * masked, rel=1e-5)


def test_fixmatch_counters_accumulate_and_reset():
    m = make("proden_fixmatch", fixmatch_threshold=0.9)
    assert m.diagnostics()["fixmatch/pseudo_acc"] == 0.0  # nothing masked yet: no NaN
    m.loss(Fixed(), batch(), epoch=0)
    m.loss(Fixed(), batch(), epoch=0)
    assert m.fm_counts.tolist() == [8, 2, 2]
    m.epoch_start(1, lambda part: pytest.fail("no pass needed"))
    assert m.fm_counts.tolist() == [0, 0, 0]


def test_single_forward_and_no_gradient_through_weak_view():
    calls = []

    class Recorder(Fixed):
        def forward(self, x):
            calls.append(len(x))
            return x

    weak = WEAK.clone().requires_grad_()
    strong = STRONG.clone().requires_grad_()
    m = make("cc_fixmatch", fixmatch_threshold=0.9)
    loss, _ = m.loss(Recorder(), batch(weak=weak, strong=strong), epoch=0)
    loss.backward()
    assert calls == [3 + 4 + 4]
    assert weak.grad is None or torch.all(weak.grad == 0)
    # d/dz of CE(2, z)/B = (softmax(z) - onehot(2)) / 4 for the one masked row
    expected = torch.zeros_like(STRONG)
    expected[2] = (torch.softmax(STRONG[2], 0) - torch.tensor([0.0, 0.0, 1.0])) / 4
    assert torch.allclose(strong.grad, expected, atol=1e-6)


def test_write_rows_keeps_last_duplicate():
    dest = torch.zeros(3, 2)
    write_rows(dest, torch.tensor([2, 0, 2]), torch.tensor([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]))
    assert dest.tolist() == [[2.0, 2.0], [0.0, 0.0], [3.0, 3.0]]


# -- PRODEN --------------------------------------------------------------------------
def test_proden_loss_and_confidence_update():
    m = make("proden_fixmatch", lambda_u=0.0)
    assert torch.allclose(m.conf, torch.tensor([[0.5, 0.5, 0], [1 / 3, 1 / 3, 1 / 3], [0, 0.5, 0.5]]))
    lab = LAB.clone().requires_grad_()
    loss, parts = m.loss(Fixed(), batch(lab=lab), epoch=0)
    l0 = -(0.5 * math.log(0.5) + 0.5 * math.log(0.3))
    l1 = -(math.log(0.2) + math.log(0.3) + math.log(0.5)) / 3
    l2 = -(0.5 * math.log(0.1) + 0.5 * math.log(0.3))
    assert parts["lab"].item() == pytest.approx((l0 + l1 + l2) / 3, rel=1e-5)
    assert loss.item() == pytest.approx(parts["lab"].item(), rel=1e-6)
    # confidences now normalise(S * f)
    expected = torch.tensor([[0.625, 0.375, 0], [0.2, 0.3, 0.5], [0, 0.25, 0.75]])
    assert torch.allclose(m.conf, expected, atol=1e-6)
    # the weights carry no gradient: d/dz = (softmax(z) - w_old) / n
    loss.backward()
    w_old = torch.tensor([[0.5, 0.5, 0], [1 / 3, 1 / 3, 1 / 3], [0, 0.5, 0.5]])
    assert torch.allclose(lab.grad, (torch.softmax(LAB, 1) - w_old) / 3, atol=1e-6)
    # the next step uses the updated confidences
    _, parts = m.loss(Fixed(), batch(), epoch=0)
    l0 = -(0.625 * math.log(0.5) + 0.375 * math.log(0.3))
    l1 = -(0.2 * math.log(0.2) + 0.3 * math.log(0.3) + 0.5 * math.log(0.5))
    l2 = -(0.25 * math.log(0.1) + 0.75 * math.log(0.3))
    assert parts["lab"].item() == pytest.approx((l0 + l1 + l2) / 3, rel=1e-5)


def test_proden_update_goes_through_all_gather():
    class TwoRanks(Comm):
        """Pretends another rank updated labelled image 2 in the same step."""
        def all_gather_cat(self, t):
            other = torch.tensor([2]) if t.dtype == torch.int64 else torch.tensor([[0.0, 0.9, 0.1]])
            return torch.cat([t, other])

    m = make("proden_fixmatch")
    m.ctx.comm = TwoRanks()
    m.loss(Fixed(), batch(lab_pos=(0,), unl_pos=(2,)), epoch=0)
    assert torch.allclose(m.conf[0], torch.tensor([0.625, 0.375, 0]))
    assert m.conf[2].tolist() == pytest.approx([0.0, 0.9, 0.1])


# -- CC ------------------------------------------------------------------------------
def test_cc_loss_by_hand_and_gradient():
    m = make("cc_fixmatch", lambda_u=0.0)
    lab = LAB.clone().requires_grad_()
    loss, parts = m.loss(Fixed(), batch(lab=lab), epoch=0)
    expected = -(math.log(0.5 + 0.3) + math.log(1.0) + math.log(0.1 + 0.3)) / 3
    assert parts["lab"].item() == pytest.approx(expected, abs=1e-6)
    loss.backward()
    # d/dz_j of -log sum_{k in S} p_k = p_j - 1[j in S] p_j / sum_{k in S} p_k
    p = torch.softmax(LAB, 1)
    s = CANDS.float()
    grad = (p - s * p / (s * p).sum(1, keepdim=True)) / 3
    assert torch.allclose(lab.grad, grad, atol=1e-6)


# -- POP -----------------------------------------------------------------------------
def test_purify_constructed_case():
    mean = torch.tensor([[0.5, 0.3, 0.2, 0.0], [0.6, 0.0005, 0.3999, 0.0], [0.0, 0.0, 0.0, 0.0], [0.1, 0.2, 0.3, 0.4]])
    mask = torch.tensor([[T, T, T, F], [T, T, T, F], [F, T, T, F], [F, F, F, T]])
    # ratios: row 0 (1, .6, .4); row 1 (1, .00083, .6665); row 2 all zero; row 3 only one label
    out = purify(mean, mask, theta=0.5)
    assert out.tolist() == [[T, T, F, F], [T, F, T, F], [F, T, T, F], [F, F, F, T]]
    # theta above every ratio but the top's: never empty, top label kept
    out = purify(mean, mask, theta=1.0)
    assert out.tolist() == [[T, F, F, F], [T, F, F, F], [F, T, T, F], [F, F, F, T]]
    assert (out <= mask).all() and out.any(1).all()


def test_purification_schedule():
    epochs = [e for e in range(40) if purification_epoch(e, 20, 5)]
    assert epochs == [20, 25, 30, 35]


def noop(part):
    raise AssertionError("POP needs no label-channel pass")


def test_pop_purifies_on_schedule_and_renormalises():
    m = make("pop_fixmatch", pop_start=2, pop_every=2, pop_window=2, pop_theta_start=0.5, pop_theta_max=0.9)
    assert isinstance(m, POPFixMatch) and isinstance(m, FixMatchPLL)
    conf = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5], [0.0, 0.4, 0.6]])
    m.conf = conf.clone()
    for epoch in range(3):  # records after epochs 0 and 1; no purification before epoch 2 ends
        m.epoch_start(epoch, noop)
    assert torch.equal(m.sets, CANDS)
    m.conf = torch.tensor([[0.7, 0.3, 0.0], [0.1, 0.3, 0.6], [0.0, 0.3, 0.7]])
    m.epoch_start(3, noop)  # after epoch 2: recorded, then purified
    # window = epochs {2, 1}: means row 0 (.8, .2), row 1 (.15, .3, .55), row 2 (0, .35, .65)
    # ratios to the row max: row 0 .25 -> drop 1; row 1 (.27, .55) -> drop 0; row 2 .54 stays
    assert m.sets.tolist() == [[T, F, F], [F, T, T], [F, T, T]]
    # the new confidences are the window means on what is left, renormalised
    assert torch.allclose(m.conf, torch.tensor([[1.0, 0, 0], [0, 0.3 / 0.85, 0.55 / 0.85], [0, 0.35, 0.65]]))
    assert m.last_change == pytest.approx(2 / 9)
    assert m.theta == 0.5  # many entries changed: no growth
    before = m.sets.clone()
    m.conf = torch.tensor([[1.0, 0, 0], [0, 0.5, 0.5], [0, 0.5, 0.5]])
    m.epoch_start(4, noop)  # after epoch 3: not a purification
    assert torch.equal(m.sets, before)
    m.epoch_start(5, noop)  # after epoch 4: nothing left to remove, theta grows
    assert torch.equal(m.sets, before) and m.last_change == 0.0
    assert m.theta == pytest.approx(0.5 * 1.001)
    d = m.diagnostics()
    assert d["pop/theta"] == m.theta
    assert d["cand/lab_size"] == pytest.approx(5 / 3) and d["cand/lab_coverage"] == 1.0


def test_pop_theta_stops_growing_at_max_and_sets_used_for_pseudo_labels():
    m = make("pop_fixmatch", fixmatch_threshold=0.9, pop_start=0, pop_every=1,
             pop_theta_start=0.3, pop_theta_growth=2.0, pop_theta_max=0.4)
    m.epoch_start(0, noop)
    assert m.theta == 0.3  # nothing trained yet: no purification
    m.epoch_start(1, noop)  # uniform confidences: nothing removed, theta (< max) doubles
    assert torch.equal(m.sets, CANDS) and m.theta == 0.6
    m.epoch_start(2, noop)  # theta >= max: no more growth (palm-ml/POP: `if theta < 0.4`)
    assert m.theta == 0.6
    m.sets = torch.tensor([[F, F, T], [T, T, T], [F, T, T]])
    # labelled image 0 now has S={2}: its weak max 0.93 passes the threshold with label 2
    m.loss(Fixed(), batch(), epoch=1)
    assert m.fm_counts.tolist() == [4, 2, 1]


def test_the_fixmatch_family_is_found_in_the_registry():
    assert {"proden_fixmatch", "cc_fixmatch", "pop_fixmatch"} <= set(FIXMATCH_FAMILY)
    assert "spmi" not in FIXMATCH_FAMILY


@pytest.mark.parametrize("name", FIXMATCH_FAMILY)
def test_state_dict_round_trip_is_exact_and_independent(name):
    a = make(name, fixmatch_threshold=0.9)
    a.loss(Fixed(), batch(), epoch=0)
    if name == "pop_fixmatch":
        a.theta, a.last_change = 0.123, 0.5
        a.epoch_start(0, noop)
    saved = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in a.state_dict().items()}
    b = make(name, fixmatch_threshold=0.9)
    b.load_state_dict(a.state_dict())
    for k in type(a).state_names:
        va, vb = getattr(a, k), getattr(b, k)
        assert torch.equal(va, vb) if isinstance(va, torch.Tensor) else va == vb
    b.loss(Fixed(), batch(lab=LAB.flip(1)), epoch=0)  # updates b only
    for k, v in saved.items():
        assert torch.equal(getattr(a, k), v) if isinstance(v, torch.Tensor) else getattr(a, k) == v


@pytest.mark.parametrize("name", FIXMATCH_FAMILY)
def test_fixmatch_options_defaults(name):
    o = build(get_method(name).Options, {}, name)
    assert (o.fixmatch_threshold, o.lambda_u, o.restrict_to_candidates) == (0.95, 1.0, True)


def test_options_and_flags():
    o = build(get_method("pop_fixmatch").Options, {}, "pop_fixmatch")
    assert (o.pop_start, o.pop_every, o.pop_window, o.pop_theta_start, o.pop_theta_growth, o.pop_theta_max,
            o.pop_change_tol) == (20, 5, 5, 0.001, 1.001, 0.4, 1e-4)
    with pytest.raises(ValueError, match="fixmatch_threshold=1.5 is too large"):
        build(get_method("cc_fixmatch").Options, {"fixmatch_threshold": 1.5}, "cc_fixmatch")
    with pytest.raises(ValueError, match="unknown proden_fixmatch option"):
        build(get_method("proden_fixmatch").Options, {"pop_start": 3}, "proden_fixmatch")
