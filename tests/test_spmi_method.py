"""SPMI's label channel and loss on constructed outputs (no data, no network)."""

import math

import pytest
import torch
from torch import nn

from spmi import candidates as C
from spmi.comm import Comm
from spmi.methods import get_method
from spmi.methods.base import Batch, MethodContext
from spmi.options import build

T, F = True, False


def make(**opts):
    ctx = MethodContext(
        num_classes=3, device=torch.device("cpu"),
        candidates=torch.tensor([[T, T, F], [T, T, T]]),
        lab_targets=torch.tensor([0, 1]), unl_targets=torch.tensor([0, 1, 2, 2]),
        unl_to_lab=torch.tensor([0, 1, -1, -1]), epochs=10, comm=Comm())
    cls = get_method("spmi")
    return cls(build(cls.Options, {"warmup": 1, "score": "kl", "tau": 0.5, "tau_u": 0.5, **opts}, "spmi"), ctx)


LAB_PROBS = torch.tensor([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1]])
UNL_PROBS = torch.tensor([[0.8, 0.1, 0.1], [0.4, 0.4, 0.2], [0.05, 0.32, 0.63], [0.1, 0.2, 0.7]])


def predictor(lab=LAB_PROBS, unl=UNL_PROBS):
    return lambda part: lab if part == "lab" else unl


def test_warmup_epochs_do_not_touch_state():
    m = make()
    def fail(part):
        raise AssertionError("no label-channel pass during warm-up")
    m.epoch_start(0, fail)
    assert torch.equal(m.lab_soft, m.ctx.candidates.float())
    assert torch.equal(m.prior, torch.full((3,), 1 / 3))


def test_labelled_pass_condense_expand_ema_by_hand():
    m = make(ema=0.5)
    m.epoch_start(1, predictor())
    # row 0: S={0,1}, p~=(.778,.222): G=(1.504, .251) > .5 -> drop 1; expand: only 0.7 > 1/3 -> {0}
    # row 1: S={0,1,2}: G=(.916,.357,.105) -> drop 2; expand adds nothing new -> {0,1}
    assert m.lab_soft.tolist() == [[1.0, 0.5, 0.0], [1.0, 1.0, 0.5]]


def test_unlabelled_init_at_warmup_then_prior_replaced():
    m = make()
    m.epoch_start(1, predictor())
    expected = C.init_unlabelled(UNL_PROBS, "official")
    expected = C.expand(UNL_PROBS, C.condense(UNL_PROBS, expected, 0.5, "kl"), torch.full((3,), 1 / 3))
    assert torch.equal(m.unl_comp <= 0.1, expected)
    # the prior used in this pass was 1/c; the new one is the mean of the unlabelled outputs
    assert torch.allclose(m.prior, UNL_PROBS.mean(0))


def test_next_epoch_expands_with_previous_prior_and_binarised_sets():
    m = make()
    m.epoch_start(1, predictor())
    before, prior = m.unl_comp <= 0.1, m.prior.clone()
    probs2 = torch.tensor([[0.3, 0.6, 0.1], [0.5, 0.25, 0.25], [0.2, 0.2, 0.6], [0.1, 0.1, 0.8]])
    m.epoch_start(2, predictor(unl=probs2))
    expected = C.expand(probs2, C.condense(probs2, before, 0.5, "kl"), prior)
    assert torch.equal(m.unl_comp <= 0.1, expected)
    assert torch.allclose(m.prior, probs2.mean(0))


def test_paper_init_rule_used_when_configured():
    m = make(init_rule="paper", tau_u=100.0)
    m.epoch_start(1, predictor())
    init = C.init_unlabelled(UNL_PROBS, "paper")
    assert torch.equal(m.unl_comp <= 0.1, C.expand(UNL_PROBS, init, torch.full((3,), 1 / 3)))


class Fixed(nn.Module):
    """'Model' whose input already is the logits."""
    def forward(self, x):
        return x


def test_loss_by_hand_excludes_empty_and_full_sets():
    m = make()
    m.unl_comp = 1 - torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    lab_logits = torch.log(torch.tensor([[0.5, 0.3, 0.2], [0.2, 0.3, 0.5]]))
    unl_logits = torch.log(torch.tensor([[0.6, 0.2, 0.2], [0.3, 0.3, 0.4], [0.1, 0.1, 0.8], [0.2, 0.2, 0.6]]))
    views = {"lab": lab_logits, "unl": unl_logits}
    batch = Batch(torch.tensor([0, 1]), torch.tensor([0, 1, 2, 3]), lambda part, kind, pos: views[part][pos])
    loss, parts = m.loss(Fixed(), batch, epoch=3)
    # labelled: row 0 S={0,1}: w=(.625,.375); row 1 S={0,1,2}: w=f
    l0 = -(0.625 * math.log(0.5) + 0.375 * math.log(0.3))
    l1 = -(0.2 * math.log(0.2) + 0.3 * math.log(0.3) + 0.5 * math.log(0.5))
    # unlabelled: row 0 S={0,1}: w=(.75,.25); row 1 full and row 2 empty are left out; row 3 S={2}
    u0 = -(0.75 * math.log(0.6) + 0.25 * math.log(0.2))
    u3 = -math.log(0.6)
    assert parts["lab"].item() == pytest.approx((l0 + l1) / 2, rel=1e-5)
    assert parts["unl"].item() == pytest.approx((u0 + u3) / 2, rel=1e-5)
    assert loss.item() == pytest.approx((l0 + l1) / 2 + (u0 + u3) / 2, rel=1e-5)


def test_loss_weights_carry_no_gradient_and_warmup_is_labelled_only():
    m = make()
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2], [0.2, 0.3, 0.5]])).requires_grad_()
    batch = Batch(torch.tensor([0, 1]), torch.tensor([0]), lambda part, kind, pos: logits[pos] if part == "lab"
                  else pytest.fail("unlabelled view made during warm-up"))
    loss, parts = m.loss(Fixed(), batch, epoch=0)
    assert set(parts) == {"lab"}
    loss.backward()
    # epoch 0: uniform weights w = s/|S|; d/dz of -sum w log softmax(z) = softmax(z) - w
    w = torch.tensor([[0.5, 0.5, 0.0], [1 / 3, 1 / 3, 1 / 3]])
    expected = (torch.softmax(logits.detach(), 1) - w) / 2
    assert torch.allclose(logits.grad, expected, atol=1e-6)


def test_bad_option_values_are_clear_errors():
    cls = get_method("spmi")
    with pytest.raises(ValueError, match="score='entropy' is not valid; choose one of: official, kl"):
        build(cls.Options, {"score": "entropy"}, "spmi")
    with pytest.raises(ValueError, match="unknown spmi option"):
        build(cls.Options, {"tau_x": 1.0}, "spmi")
    with pytest.raises(ValueError, match="warmup=-1 is too small"):
        build(cls.Options, {"warmup": -1}, "spmi")


def test_uniform_first_epoch_only_in_warmup():
    """Authors' main.py::train: uniform 1/|S| weights only in epoch 0 of warm-up; with T_w = 0
    epoch 0 already uses the prediction-weighted targets."""
    m = make(warmup=0)
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2], [0.2, 0.3, 0.5]]))
    unl = torch.log(torch.tensor([[0.6, 0.2, 0.2]]))
    m.unl_comp = torch.tensor([[0.0, 0.0, 1.0]])[[0] * 4]
    views = {"lab": logits, "unl": unl[[0] * 4]}
    batch = Batch(torch.tensor([0, 1]), torch.tensor([0]), lambda part, kind, pos: views[part][pos])
    _, parts = m.loss(Fixed(), batch, epoch=0)
    l0 = -(0.625 * math.log(0.5) + 0.375 * math.log(0.3))
    l1 = -(0.2 * math.log(0.2) + 0.3 * math.log(0.3) + 0.5 * math.log(0.5))
    assert parts["lab"].item() == pytest.approx((l0 + l1) / 2, rel=1e-5)
    assert "unl" in parts


def test_unlabelled_complementary_ema_removal_shows_within_two_passes():
    """CIFAR-100 path (authors' utils/cifar100.py::CIFAR100_Unlabeled.set_pseudo_complementary_labels,
    main.py::train): the first pass stores 0.9 init + 0.1 post; a label the pass removes stays
    in the set the next pass reads while comp <= 0.1, i.e. it is gone after two removals."""
    m = make(unlabelled_ema=0.9, tau_u=100.0)
    m.epoch_start(1, predictor(unl=torch.tensor([[0.45, 0.35, 0.2]] * 4)))  # init {0, 1}, kept
    assert m.unl_comp[0].tolist() == [0.0, 0.0, 1.0]
    m.opts.tau_u = 0.01
    low = torch.tensor([[0.95, 0.04, 0.01]] * 4)  # condensation drops label 1, expansion does not re-add it
    m.epoch_start(2, predictor(unl=low))
    assert m.unl_comp[0].tolist() == pytest.approx([0.0, 0.1, 1.0])
    assert (m.unl_comp[0] <= 0.1).tolist() == [True, True, False]
    m.epoch_start(3, predictor(unl=low))
    assert m.unl_comp[0].tolist() == pytest.approx([0.0, 0.19, 1.0])
    assert (m.unl_comp[0] <= 0.1).tolist() == [True, False, False]


def test_unlabelled_first_pass_stores_ema_of_init_and_post():
    m = make(unlabelled_ema=0.9, tau_u=100.0)
    probs = torch.tensor([[0.5, 0.3, 0.2]] * 4)  # init (geometric mean 0.311): {0}; expansion adds nothing
    m.epoch_start(1, lambda part: LAB_PROBS if part == "lab" else probs)
    assert m.unl_comp[0].tolist() == [0.0, 1.0, 1.0]
    m2 = make(unlabelled_ema=0.9, tau_u=100.0, init_rule="paper")
    m2.epoch_start(1, lambda part: LAB_PROBS if part == "lab" else torch.tensor([[0.3, 0.36, 0.34]] * 4))
    # paper init {1, 2} (> 1/3); expansion with prior 1/3 adds nothing new
    assert m2.unl_comp[0].tolist() == [1.0, 0.0, 0.0]


def test_unlabelled_loss_uses_soft_values_and_soft_row_sums():
    m = make(unlabelled_ema=0.9)
    m.unl_comp = torch.tensor([[0.0, 0.19, 1.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [0.1, 1.0, 1.0]])
    lab_logits = torch.log(torch.tensor([[0.5, 0.3, 0.2], [0.2, 0.3, 0.5]]))
    unl_p = torch.tensor([[0.6, 0.2, 0.2], [0.3, 0.3, 0.4], [0.1, 0.1, 0.8], [0.2, 0.2, 0.6]])
    views = {"lab": lab_logits, "unl": unl_p.log()}
    batch = Batch(torch.tensor([0, 1]), torch.tensor([0, 1, 2, 3]), lambda part, kind, pos: views[part][pos])
    _, parts = m.loss(Fixed(), batch, epoch=3)
    # row 0: weights normalise((1, .81, 0) * f); row 1 (sum c) and row 2 (sum 0) left out;
    # row 3: (.9, 0, 0) -> all weight on label 0
    w0 = torch.tensor([1.0, 0.81, 0.0]) * unl_p[0]
    w0 = w0 / w0.sum()
    u0 = -(w0 * unl_p[0].log()).sum().item()
    u3 = -math.log(0.2)
    assert parts["unl"].item() == pytest.approx((u0 + u3) / 2, rel=1e-5)
