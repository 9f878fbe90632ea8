"""CC + FixMatch: the classifier-consistent loss -log sum_{k in S} f_k(x) (Feng et al.,
NeurIPS 2020) on the labelled stream, FixMatch (Sohn et al., NeurIPS 2020) on the
unlabelled one."""

from __future__ import annotations

from torch import Tensor

from spmi.methods import register_method
from spmi.methods.base import Batch
from spmi.methods.fixmatch import FixMatchOptions, FixMatchPLL


def cc_loss(logits: Tensor, sets: Tensor) -> Tensor:
    """Per row -log sum_{k in S} softmax(logits)_k, as a logsumexp of masked log-probs."""
    logp = logits.float().log_softmax(dim=1)
    return -logp.masked_fill(~sets, float("-inf")).logsumexp(dim=1)


@register_method
class CCFixMatch(FixMatchPLL):
    name = "cc_fixmatch"
    Options = FixMatchOptions

    def labelled_loss(self, logits: Tensor, batch: Batch) -> Tensor:
        return cc_loss(logits, self.ctx.candidates[batch.lab]).mean()
