"""Golden test: SPMI's label channel and loss against a reference of the authors' code.

The reference below is this test's own, loop-free transcription of livyf/SPMI (commit
da1fb5a) main.py::train (the epoch's labelled and unlabelled passes from ``epoch >=
args.warm_up`` on, and the union-training loss), utils/utils_loss.py::v4Loss,
utils/cifar100.py::CIFAR100_Unlabeled.set_pseudo_complementary_labels (EMA 0.9, ``init``
at the first pass) and utils/fmnist.py::FMNIST_Unlabeled (hard replacement). Both sides
get the same random class probabilities for several epochs; the candidate sets, soft
vectors, prior and batch loss must agree.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spmi.comm import Comm
from spmi.methods import get_method
from spmi.methods.base import Batch, MethodContext
from spmi.options import build


def _kl_scores(Y: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """main.py's ``kl`` for hard sets Y: KLDivLoss(log_softmax(y_v_k, dim=1), y_v).sum(2)."""
    c = Y.shape[1]
    y_v_k = (Y * pred).unsqueeze(1).repeat(1, c, 1)
    y_v_k[:, torch.arange(c), torch.arange(c)] = 0
    y_v_k = y_v_k / y_v_k.sum(dim=2, keepdim=True)
    y_v = Y * pred
    y_v = y_v / y_v.sum(dim=1, keepdim=True)
    return nn.KLDivLoss(reduction="none")(F.log_softmax(y_v_k, dim=1), y_v.unsqueeze(1).repeat(1, c, 1)).sum(2)


def _removed(Y: torch.Tensor, pred: torch.Tensor, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows where condensation fires, and the label each would remove (kl_min)."""
    kl = _kl_scores(Y, pred)
    kl[Y == 0] = torch.inf
    kl_min = torch.min(kl, dim=1)
    kl[Y == 0] = -torch.inf
    kl_max = torch.max(kl, dim=1)
    fire = (Y.sum(dim=1) != 1) & (kl_max[0] > theta)
    return fire, kl_min[1]


class AuthorsSPMI:
    """State and per-epoch pass of the authors' code (whole sets at once instead of batches:
    every row is visited once per pass and the rows do not interact)."""

    def __init__(self, given: torch.Tensor, n_unl: int, warm_up: int, cifar100: bool,
                 tau_l: float = 3.0, tau_u: float = 2.0, ema_theta: float = 0.999):
        c = given.shape[1]
        self.pseudo_cand = given.float().clone()     # labelled dataset's pseudo_cand_labels (aliased as the given)
        self.comp = torch.zeros(n_unl, c)            # unlabelled dataset's pseudo_complementary_labels
        self.posterior = torch.ones(c) / c
        self.warm_up, self.cifar100 = warm_up, cifar100
        self.tau_l, self.tau_u, self.ema_theta = tau_l, tau_u, ema_theta

    def epoch_pass(self, epoch: int, pred_l: torch.Tensor, pred_u: torch.Tensor) -> None:
        c = pred_l.shape[1]
        last_posterior = self.posterior
        # labelled
        Y = (self.pseudo_cand > 0.1).to(torch.int)
        Y_ori = self.pseudo_cand.clone()              # given_partial_label_matrix is the same tensor
        fire, kl_min = _removed(Y, pred_l, self.tau_l)
        pur_idx = 1 - F.one_hot(kl_min, c)
        pur_idx[~fire] = 1
        cand = Y - (1 - pur_idx)
        cand = torch.logical_or(cand, torch.logical_and(pred_l > last_posterior, Y_ori)).to(torch.float)
        self.pseudo_cand = self.pseudo_cand * self.ema_theta + cand * (1 - self.ema_theta)
        # unlabelled
        posterior = pred_u.mean(dim=0)
        comp = self.comp.clone()
        if epoch == self.warm_up:
            comp = (-torch.log(pred_u) > torch.mean(-torch.log(pred_u), dim=1, keepdim=True)).to(torch.float)
            self.comp = comp.clone()                  # set_pseudo_complementary_labels(init=True)
        if self.cifar100:
            comp = (comp > 0.1).to(torch.float)
        labels_u = 1 - comp
        fire, kl_min = _removed(labels_u, pred_u, self.tau_u)
        comp[fire] = torch.logical_or(comp[fire], F.one_hot(kl_min[fire], c)).to(torch.float)
        comp = torch.logical_and(comp, pred_u <= last_posterior).to(torch.float)
        self.comp = self.comp * 0.9 + comp * 0.1 if self.cifar100 else comp
        self.posterior = posterior

    def loss(self, lab_idx, unl_idx, logits_l, logits_u) -> tuple[float, float]:
        """The union-training step's sup_loss (v4Loss after update_weight_byclsout1) and unsup_loss."""
        c = logits_l.shape[1]
        pred = torch.softmax(torch.cat([logits_l, logits_u]), dim=1)
        out_l, out_u = pred[: len(lab_idx)], pred[len(lab_idx):]
        target = self.pseudo_cand[lab_idx] * out_l
        target = target / target.sum(dim=1, keepdim=True)
        sup = -torch.mean(torch.sum(target * torch.log(out_l), dim=1))
        comp = self.comp[unl_idx]
        comp_num = comp.sum(dim=1)
        valid = (comp_num != 0) & (comp_num != c)
        labels_u, out_u = 1 - comp[valid], out_u[valid]
        pseudo = labels_u * out_u
        pseudo = (pseudo / pseudo.sum(dim=1, keepdim=True)).detach()
        unsup = -torch.mean(torch.sum(pseudo * torch.log(out_u), dim=1))
        return float(sup), float(unsup)


class Fixed(nn.Module):
    def forward(self, x):
        return x


def _probs(g: torch.Generator, base: torch.Tensor) -> torch.Tensor:
    """Outputs that drift a little from epoch to epoch around fixed per-image logits."""
    return torch.softmax(base + 0.3 * torch.randn(base.shape, generator=g), dim=1)


@pytest.mark.parametrize(("c", "p", "cifar100", "sharp", "moves"), [
    (10, 0.3, False, 3.0, True),
    (100, 0.05, True, 5.0, True),    # peaked outputs: labels leave the CIFAR-100 sets within the run
    (100, 0.05, True, 1.0, False),   # flat outputs: many soft values, no set changes yet in 7 passes
])
def test_label_channel_and_loss_agree_with_the_authors_code(c: int, p: float, cifar100: bool, sharp: float,
                                                            moves: bool) -> None:
    g = torch.Generator().manual_seed(c)
    n_lab, n_unl, warm_up, epochs = 60, 80, 2, 9
    targets = torch.randint(0, c, (n_lab,), generator=g)
    given = (torch.rand(n_lab, c, generator=g) < p) | F.one_hot(targets, c).bool()
    ctx = MethodContext(num_classes=c, device=torch.device("cpu"), candidates=given,
                        lab_targets=targets, unl_targets=torch.randint(0, c, (n_unl,), generator=g),
                        unl_to_lab=torch.full((n_unl,), -1), epochs=epochs, comm=Comm())
    cls = get_method("spmi")
    ours = cls(build(cls.Options, {"warmup": warm_up, "unlabelled_ema": 0.9 if cifar100 else 0.0}, "spmi"), ctx)
    ref = AuthorsSPMI(given, n_unl, warm_up, cifar100)
    base_l, base_u = torch.randn(n_lab, c, generator=g) * sharp, torch.randn(n_unl, c, generator=g) * sharp
    changes = 0
    for epoch in range(warm_up, epochs):
        pred_l, pred_u = _probs(g, base_l), _probs(g, base_u)
        before = ref.comp.clone()
        ours.epoch_start(epoch, lambda part, pl=pred_l, pu=pred_u: pl if part == "lab" else pu)
        ref.epoch_pass(epoch, pred_l, pred_u)
        torch.testing.assert_close(ours.lab_soft, ref.pseudo_cand, rtol=0, atol=1e-6)
        torch.testing.assert_close(ours.unl_comp, ref.comp, rtol=0, atol=1e-6)
        torch.testing.assert_close(ours.prior, ref.posterior)
        assert torch.equal(ours.unl_comp > 0.1, ref.comp > 0.1)            # the sets the next pass reads
        changes += int(((before > 0.1) != (ref.comp > 0.1)).sum()) if epoch > warm_up else 0
        lab_idx, unl_idx = torch.randperm(n_lab, generator=g)[:32], torch.randperm(n_unl, generator=g)[:40]
        logits_l, logits_u = torch.randn(32, c, generator=g) * 2, torch.randn(40, c, generator=g) * 2
        views = {"lab": logits_l, "unl": logits_u}
        batch = Batch(lab_idx, unl_idx, lambda part, kind, pos, v=views: v[part])
        _, parts = ours.loss(Fixed(), batch, epoch + 1)
        sup, unsup = ref.loss(lab_idx, unl_idx, logits_l, logits_u)
        assert parts["lab"].item() == pytest.approx(sup, rel=1e-5)
        assert parts["unl"].item() == pytest.approx(unsup, rel=1e-5)
    assert (changes > 0) == moves  # the unlabelled sets the passes read moved (or, flat, not yet)
    if cifar100:  # soft complementary values strictly between 0 and 1 exist: the EMA path ran
        assert ((ref.comp > 0) & (ref.comp < 1)).any()
