"""SPMI (Liu, Lv, Geng, Xu, ICML 2024) as the authors' code runs it.

Per epoch from T_w on, a label-channel pass (eval mode, weak view) condenses and then
expands the candidate sets of labelled and unlabelled data; training uses strong views
of both parts with the self-weighted candidate loss (Eq. 1-2).
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
    warmup: int = option(10, "warm-up epochs T_w (labelled data only)", min=0)
    tau: float = option(3.0, "condensation threshold of labelled data", min=0.0)
    tau_u: float = option(2.0, "condensation threshold of unlabelled data", min=0.0)
    score: str = option("official", "information score: official (authors' code) or kl (Eq. 15 literally)",
                        choices=C.SCORES)
    init_rule: str = option("official", "unlabelled init: official (geometric mean) or paper (f_k > 1/c, Eq. 3)",
                            choices=C.INIT_RULES)
    ema: float = option(0.999, "EMA of labelled soft candidate vectors (0: hard replacement)", min=0.0, max=1.0)
    unlabelled_ema: float = option(0.0, "EMA of unlabelled candidate sets (authors: 0.9 on CIFAR-100)",
                                   min=0.0, max_exclusive=1.0)
    binarise: float = option(0.1, "soft vectors above this count as candidates in the pass",
                             min=0.0, max_exclusive=1.0)
    uniform_first_epoch: bool = option(True, "epoch 0 uses uniform weights 1/|S| (authors' code)")


@register_method
class SPMI(Method):
    name = "spmi"
    Options = SPMIOptions
    state_names = ("lab_soft", "unl_soft", "prior")

    def __init__(self, opts: SPMIOptions, ctx: MethodContext):
        super().__init__(opts, ctx)
        c = ctx.num_classes
        self.lab_soft = ctx.candidates.float().clone()                        # s, soft candidate vectors
        self.unl_soft = torch.zeros(ctx.n_unlabelled, c, device=ctx.device)  # pseudo sets, set at T_w
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
        mask_u = C.init_unlabelled(probs_u, o.init_rule) if first else self.unl_soft > o.binarise
        mask_u = C.condense(probs_u, mask_u, o.tau_u, o.score)
        mask_u = C.expand(probs_u, mask_u, self.prior)
        ema = 0.0 if first else o.unlabelled_ema
        self.unl_soft = ema * self.unl_soft + (1.0 - ema) * mask_u.float()
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

        if epoch == 0 and o.uniform_first_epoch:
            w_l = normalise_rows(s_lab)
        else:
            w_l = normalise_rows(s_lab * logp_l.detach().exp())
        loss_l = weighted_nll(logp_l, w_l).mean()
        if not use_unl:
            return loss_l, {"lab": loss_l.detach()}

        s_unl = (self.unl_soft[batch.unl] > o.binarise).float()
        size = s_unl.sum(dim=1)
        keep = ((size > 0) & (size < self.ctx.num_classes)).float()
        w_u = normalise_rows(s_unl * logp_u.detach().exp())
        loss_u = (weighted_nll(logp_u, w_u) * keep).sum() / keep.sum().clamp_min(1.0)
        return loss_l + loss_u, {"lab": loss_l.detach(), "unl": loss_u.detach()}

    def diagnostics(self) -> dict[str, object]:
        lab_size, lab_cover = set_stats(self.lab_soft > self.opts.binarise, self.ctx.lab_targets)
        out: dict[str, object] = {"cand/lab_size": lab_size, "cand/lab_coverage": lab_cover,
                                  "prior": [round(float(p), 5) for p in self.prior]}
        mask_u = self.unl_soft > self.opts.binarise
        if mask_u.any():
            size, cover = set_stats(mask_u, self.ctx.unl_targets)
            sizes = mask_u.sum(dim=1)
            out |= {"cand/unl_size": size, "cand/unl_coverage": cover,
                    "cand/unl_trained": float(((sizes > 0) & (sizes < self.ctx.num_classes)).float().mean())}
        return out
