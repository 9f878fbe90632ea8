"""POP + FixMatch: PRODEN's loss with progressive purification of the candidate sets
(Xu, Liu, Lv, Qiao, Geng, ICML 2023) on the labelled stream, FixMatch (Sohn et al.,
NeurIPS 2020) on the unlabelled one.

As palm-ml/POP main.py::train_benchmark runs it: after each epoch's training the current
confidences enter a window of the last ``pop_window`` epochs (slot epoch % window). After
epochs pop_start, pop_start + pop_every, ... every candidate set loses the labels whose
window-mean confidence, divided by the row's largest, is below theta (the row's top label
always stays), and the confidences become the window mean restricted to what remains,
renormalised; the next epoch trains on them. While theta < ``pop_theta_max`` it grows by
``pop_theta_growth`` whenever a purification changes fewer than ``pop_change_tol`` of the
[l, c] entries. Here the hooks run at the start of the next epoch, which is the same point.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from spmi.methods import register_method
from spmi.methods.base import MethodContext, Predict
from spmi.methods.fixmatch import FixMatchOptions, proden_targets
from spmi.methods.proden_fixmatch import ProdenLoss
from spmi.options import option


@dataclass
class POPOptions(FixMatchOptions):
    pop_start: int = option(20, "epoch after whose training the first purification runs", min=0,
                            starts="POP's purification")
    pop_every: int = option(5, "epochs between purifications", min=1)
    pop_window: int = option(5, "epochs of confidences averaged for purification", min=1)
    pop_theta_start: float = option(0.001, "initial purification threshold theta", min=0.0, max=1.0)
    pop_theta_growth: float = option(1.001, "factor on theta after a purification that changed little", min=1.0)
    pop_theta_max: float = option(0.4, "theta stops growing once it reaches this", min=0.0, max=1.0)
    pop_change_tol: float = option(1e-4, "theta grows when fewer than this share of entries changed", min=0.0)


def purify(mean_conf: Tensor, mask: Tensor, theta: float) -> Tensor:
    """Candidate sets without the labels k whose mean_conf_k / max_{j in S} mean_conf_j < theta;
    the row's top label (and every label of a row whose maximum is 0) is kept."""
    masked = torch.where(mask, mean_conf, torch.zeros_like(mean_conf))
    top = masked.amax(dim=1, keepdim=True)
    ratio = masked / torch.where(top > 0, top, torch.ones_like(top))
    keep = mask & ((ratio >= theta) | (top <= 0))
    best = torch.nn.functional.one_hot(masked.argmax(dim=1), mask.shape[1]).bool()
    return keep | (best & mask)


def purification_epoch(epoch: int, start: int, every: int) -> bool:
    """Whether the sets are purified after ``epoch``'s training (used from epoch + 1 on)."""
    return epoch >= start and (epoch - start) % every == 0


@register_method
class POPFixMatch(ProdenLoss):
    name = "pop_fixmatch"
    Options = POPOptions
    state_names = (*ProdenLoss.state_names, "sets", "window", "theta", "last_change")

    def __init__(self, opts: POPOptions, ctx: MethodContext):
        super().__init__(opts, ctx)
        self.sets = ctx.candidates.clone()
        self.window = torch.zeros(opts.pop_window, *self.conf.shape, device=ctx.device)
        self.theta = float(opts.pop_theta_start)
        self.last_change = 0.0  # share of entries changed by the latest purification

    def candidate_sets(self) -> Tensor:
        return self.sets

    def epoch_start(self, epoch: int, predict: Predict) -> None:
        super().epoch_start(epoch, predict)
        if epoch == 0:
            return
        o, done = self.opts, epoch - 1  # the epoch whose training just ended
        self.window[done % o.pop_window] = self.conf
        if not purification_epoch(done, o.pop_start, o.pop_every):
            return
        mean_conf = self.window[: min(epoch, o.pop_window)].mean(dim=0)
        new = purify(mean_conf, self.sets, self.theta)
        self.last_change = float((new != self.sets).float().mean())
        self.sets = new
        self.conf = proden_targets(new, mean_conf)
        if self.theta < o.pop_theta_max and self.last_change < o.pop_change_tol:
            self.theta *= o.pop_theta_growth

    def diagnostics(self) -> dict[str, Any]:
        return {**super().diagnostics(), "pop/theta": self.theta, "pop/last_change": self.last_change}
