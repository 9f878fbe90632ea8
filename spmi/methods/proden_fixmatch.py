"""PRODEN + FixMatch: PRODEN (Lv et al., ICML 2020) on the labelled stream, FixMatch
(Sohn et al., NeurIPS 2020) on the unlabelled one.

Labelled loss -sum_k w_k log f_k(x) with per-image confidences w, initialised to 1/|S|
and after every step replaced by normalise(S * f(x)) from the detached prediction.
"""

from __future__ import annotations

from torch import Tensor

from spmi.methods import register_method
from spmi.methods.base import Batch, MethodContext, weighted_nll
from spmi.methods.fixmatch import FixMatchOptions, FixMatchPLL, gathered_write, proden_targets


class ProdenLoss(FixMatchPLL):
    """PRODEN's self-weighted loss over ``candidate_sets()``; confidences ``conf`` [l, c]."""

    state_names = (*FixMatchPLL.state_names, "conf")

    def __init__(self, opts: FixMatchOptions, ctx: MethodContext):
        super().__init__(opts, ctx)
        self.conf = proden_targets(ctx.candidates, ctx.candidates.float())  # 1/|S| on S

    def labelled_loss(self, logits: Tensor, batch: Batch) -> Tensor:
        logp = logits.float().log_softmax(dim=1)
        loss = weighted_nll(logp, self.conf[batch.lab]).mean()
        new = proden_targets(self.candidate_sets()[batch.lab], logp.detach().exp())
        gathered_write(self.ctx, self.conf, batch.lab, new)
        return loss


@register_method
class ProdenFixMatch(ProdenLoss):
    name = "proden_fixmatch"
    Options = FixMatchOptions
