"""SPMI (Liu, Lv, Geng, Xu, ICML 2024) as the authors' code runs it.

Per epoch from T_w on, a label-channel pass (eval mode, weak view) condenses and then
expands the candidate sets of labelled and unlabelled data; training uses strong views
of both parts with the self-weighted candidate loss (Eq. 1-2).

Unlabelled sets are stored as the authors store them: a complementary vector ``comp``
(1 = not a candidate). With ``unlabelled_ema`` theta > 0 (their CIFAR-100 runs, 0.9) it
is averaged, comp <- theta comp + (1 - theta) new (the first pass: theta init + (1 -
theta) post-pass); the pass reads the set {k : comp_k <= binarise}, and the loss weighs
with the soft candidate values 1 - comp, keeping rows whose comp sum is neither 0 nor c.
With theta = 0 (every other dataset) this is hard replacement.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from spmi import candidates as C
from spmi.methods import register_method
from spmi.methods.base import Batch, Method, MethodContext, Predict, normalise_rows, set_stats, weighted_nll
from spmi.options import option


@dataclass
class SPMIOptions:
    warmup: int = option(10, "warm-up epochs T_w (labelled data only)", min=0,
                         starts="the label channel (condensation and expansion)")
    tau: float = option(3.0, "condensation threshold of labelled data", min=0.0)
    tau_u: float = option(2.0, "condensation threshold of unlabelled data", min=0.0)
    score: str = option("official", "information score: official (authors' code) or kl (Eq. 15 literally)",
                        choices=C.SCORES)
    init_rule: str = option("official", "unlabelled init: official (geometric mean) or paper (f_k > 1/c, Eq. 3)",
                            choices=C.INIT_RULES)
    ema: float = option(0.999, "EMA of labelled soft candidate vectors (0: hard replacement)", min=0.0, max=1.0)
    unlabelled_ema: float = option(0.0, "EMA theta of the unlabelled complementary vectors (0: hard "
                                        "replacement)", min=0.0, max_exclusive=1.0)
    binarise: float = option(0.1, "in the pass, labelled soft values above this are candidates; unlabelled "
                                  "complementary values above it are not", min=0.0, max_exclusive=1.0)
    uniform_first_epoch: bool = option(True, "epoch 0 of warm-up uses uniform weights 1/|S| (authors' code)")


@register_method
class SPMI(Method):
    name = "spmi"
    Options = SPMIOptions
    state_names = ("lab_soft", "unl_comp", "prior")

    def __init__(self, opts: SPMIOptions, ctx: MethodContext):
        super().__init__(opts, ctx)
        c = ctx.num_classes
        self.lab_soft = ctx.candidates.float().clone()                        # s, soft candidate vectors
        # complementary vectors of the pseudo sets; all ones (empty sets) until T_w sets them
        self.unl_comp = torch.ones(ctx.n_unlabelled, c, device=ctx.device)
        self.prior = torch.full((c,), 1.0 / c, device=ctx.device)

    # -- label channel -------------------------------------------------------------
    def epoch_start(self, epoch: int, predict: Predict) -> None:
        o = self.opts
        if epoch < o.warmup:
            return
        probs_l = predict("lab")
        mask_l = self.lab_soft > o.binarise
        mask_l = C.condense(probs_l, mask_l, o.tau, o.score)
        mask_l = C.expand(probs_l, mask_l, self.prior, allowed=self.ctx.candidates)
        self.lab_soft = o.ema * self.lab_soft + (1.0 - o.ema) * mask_l.float()

        probs_u = predict("unl")
        new_prior = C.class_prior(probs_u)
        first = epoch == o.warmup
        if first:
            init = C.init_unlabelled(probs_u, o.init_rule)
            self.unl_comp = (~init).float()
            mask_u = init
        else:
            mask_u = ~(self.unl_comp > o.binarise)
        mask_u = C.condense(probs_u, mask_u, o.tau_u, o.score)
        mask_u = C.expand(probs_u, mask_u, self.prior)
        theta = o.unlabelled_ema
        self.unl_comp = theta * self.unl_comp + (1.0 - theta) * (~mask_u).float()
        self.prior = new_prior

    # -- training ------------------------------------------------------------------
    def loss(self, model: nn.Module, batch: Batch, epoch: int) -> tuple[Tensor, dict[str, Tensor]]:
        o = self.opts
        s_lab = self.lab_soft[batch.lab]
        use_unl = epoch >= o.warmup
        x = batch.view("lab", "strong")
        if use_unl:
            x = torch.cat([x, batch.view("unl", "strong")])
        logp = torch.log_softmax(model(x).float(), dim=1)
        logp_l, logp_u = logp[: len(batch.lab)], logp[len(batch.lab):]

        if epoch == 0 and not use_unl and o.uniform_first_epoch:  # epoch 0 of warm-up only
            w_l = normalise_rows(s_lab)
        else:
            w_l = normalise_rows(s_lab * logp_l.detach().exp())
        loss_l = weighted_nll(logp_l, w_l).mean()
        if not use_unl:
            return loss_l, {"lab": loss_l.detach()}

        comp = self.unl_comp[batch.unl]
        comp_sum = comp.sum(dim=1)
        keep = ((comp_sum != 0) & (comp_sum != self.ctx.num_classes)).float()
        w_u = normalise_rows((1.0 - comp) * logp_u.detach().exp())
        loss_u = (weighted_nll(logp_u, w_u) * keep).sum() / keep.sum().clamp_min(1.0)
        return loss_l + loss_u, {"lab": loss_l.detach(), "unl": loss_u.detach()}

    def diagnostics(self) -> dict[str, object]:
        lab_size, lab_cover = set_stats(self.lab_soft > self.opts.binarise, self.ctx.lab_targets)
        out: dict[str, object] = {"cand/lab_size": lab_size, "cand/lab_coverage": lab_cover,
                                  "prior": [round(float(p), 5) for p in self.prior]}
        mask_u = ~(self.unl_comp > self.opts.binarise)
        if mask_u.any():
            size, cover = set_stats(mask_u, self.ctx.unl_targets)
            comp_sum = self.unl_comp.sum(dim=1)
            trained = (comp_sum != 0) & (comp_sum != self.ctx.num_classes)
            out |= {"cand/unl_size": size, "cand/unl_coverage": cover,
                    "cand/unl_trained": float(trained.float().mean())}
        return out
