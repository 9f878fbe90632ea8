"""FixMatch on the unlabelled stream, shared by the partial-label baselines.

FixMatch (Sohn et al., NeurIPS 2020): q = f(weak view) without gradient; images with
max q >= threshold add CE(argmax q, f(strong view)); the sum is divided by the unlabelled
batch size and weighted by lambda_u. Labelled images met in the unlabelled stream may
restrict the pseudo-label (and its confidence) to their candidate set.

This module registers no method: it provides the options, the functions and an
unregistered base class ``FixMatchPLL`` (partial-label loss on the labelled strong view
plus FixMatch) that the baselines subclass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spmi.methods.base import Batch, Method, MethodContext, Predict, normalise_rows, set_stats
from spmi.options import option


@dataclass
class FixMatchOptions:
    fixmatch_threshold: float = option(0.95, "FixMatch confidence threshold of pseudo-labels", min=0.0, max=1.0)
    lambda_u: float = option(1.0, "weight of the FixMatch unlabelled loss", min=0.0)
    restrict_to_candidates: bool = option(
        True, "labelled images in the unlabelled stream take their pseudo-label from their candidate set")


def forward_views(model: nn.Module, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
    """One forward of cat(lab strong, unl weak, unl strong) (BatchNorm sees all three);
    returns their float32 logits, the weak ones detached."""
    x_l, x_w, x_s = batch.view("lab", "strong"), batch.view("unl", "weak"), batch.view("unl", "strong")
    logits = model(torch.cat([x_l, x_w, x_s])).float()
    logits_l, logits_w, logits_s = logits.split([len(x_l), len(x_w), len(x_s)])
    return logits_l, logits_w.detach(), logits_s


def unlabelled_allowed(ctx: MethodContext, unl_pos: Tensor, lab_sets: Tensor) -> Tensor:
    """Per unlabelled image the labels a pseudo-label may take [n, c]: the candidate set
    (rows of ``lab_sets``) of labelled images, every class otherwise."""
    lab_pos = ctx.unl_to_lab[unl_pos]
    sets = lab_sets[lab_pos.clamp_min(0)]
    return torch.where((lab_pos >= 0).unsqueeze(1), sets, torch.ones_like(sets))


@torch.no_grad()
def pseudo_labels(weak_logits: Tensor, allowed: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Confidence and index of max q, q = softmax(weak logits), over ``allowed`` labels
    (q is not renormalised over them)."""
    q = torch.softmax(weak_logits.detach().float(), dim=1)
    if allowed is not None:
        q = q.masked_fill(~allowed, 0.0)
    return q.max(dim=1)


def fixmatch_loss(strong_logits: Tensor, conf: Tensor, label: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
    """(1/B) sum_b 1[conf_b >= threshold] CE(label_b, strong_b) and the mask [B]."""
    mask = conf >= threshold
    ce = F.cross_entropy(strong_logits.float(), label, reduction="none")
    return (ce * mask).sum() / max(len(label), 1), mask


def write_rows(dest: Tensor, idx: Tensor, values: Tensor) -> None:
    """``dest[idx] = values`` in place; a repeated index takes its last occurrence (a
    deterministic choice, unlike a plain index_put with duplicates on CUDA)."""
    n = len(idx)
    if n == 0:
        return
    order = torch.argsort(idx * n + torch.arange(n, device=idx.device))  # unique keys: stable
    ordered = idx[order]
    last = torch.ones(n, dtype=torch.bool, device=idx.device)
    last[:-1] = ordered[1:] != ordered[:-1]
    keep = order[last]
    dest[idx[keep]] = values[keep].to(dest.dtype)


def gathered_write(ctx: MethodContext, dest: Tensor, idx: Tensor, values: Tensor) -> None:
    """Write this step's per-image updates of every rank, so all ranks hold the same state."""
    write_rows(dest, ctx.comm.all_gather_cat(idx), ctx.comm.all_gather_cat(values))


class FixMatchPLL(Method):
    """Unregistered base: a partial-label loss on the labelled strong view (subclasses
    define ``labelled_loss``) plus lambda_u times FixMatch on the unlabelled stream."""

    Options = FixMatchOptions
    state_names: tuple[str, ...] = ("fm_counts",)
    rank_local = ("fm_counts",)

    def __init__(self, opts: Any, ctx: MethodContext):
        super().__init__(opts, ctx)
        # this epoch's unlabelled images seen, above threshold, correctly pseudo-labelled (this rank)
        self.fm_counts = torch.zeros(3, dtype=torch.int64, device=ctx.device)

    def candidate_sets(self) -> Tensor:
        """Current candidate sets of the labelled data [l, c] bool."""
        return self.ctx.candidates

    def labelled_loss(self, logits: Tensor, batch: Batch) -> Tensor:
        raise NotImplementedError

    def epoch_start(self, epoch: int, predict: Predict) -> None:
        self.fm_counts = torch.zeros_like(self.fm_counts)

    def loss(self, model: nn.Module, batch: Batch, epoch: int) -> tuple[Tensor, dict[str, Tensor]]:
        o = self.opts
        logits_l, logits_w, logits_s = forward_views(model, batch)
        loss_l = self.labelled_loss(logits_l, batch)
        allowed = (unlabelled_allowed(self.ctx, batch.unl, self.candidate_sets())
                   if o.restrict_to_candidates else None)
        conf, label = pseudo_labels(logits_w, allowed)
        loss_u, mask = fixmatch_loss(logits_s, conf, label, o.fixmatch_threshold)
        correct = mask & (label == self.ctx.unl_targets[batch.unl])
        self.fm_counts += torch.stack([mask.new_tensor(len(mask), dtype=torch.int64),
                                       mask.sum(), correct.sum()])
        return loss_l + o.lambda_u * loss_u, {"lab": loss_l.detach(), "unl": loss_u.detach()}

    def diagnostics(self) -> dict[str, Any]:
        size, cover = set_stats(self.candidate_sets(), self.ctx.lab_targets)
        seen, masked, correct = self.ctx.comm.all_reduce_sum(self.fm_counts.clone()).tolist()
        return {"cand/lab_size": size, "cand/lab_coverage": cover,
                "fixmatch/mask_rate": masked / seen if seen else 0.0,
                "fixmatch/pseudo_acc": correct / masked if masked else 0.0}


def proden_targets(sets: Tensor, probs: Tensor) -> Tensor:
    """PRODEN confidences normalise(S * f) (Lv et al., ICML 2020); S/|S| where that is 0."""
    s = sets.float()
    w = normalise_rows(s * probs)
    return torch.where(w.sum(dim=1, keepdim=True) > 0, w, normalise_rows(s))
