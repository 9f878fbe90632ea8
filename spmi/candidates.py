"""Candidate-set maths of SPMI as pure, vectorised tensor functions.

``probs`` is an ``[N, c]`` float tensor of softmax outputs; masks are ``[N, c]`` bool
tensors. Equation numbers refer to Liu, Lv, Geng, Xu, ICML 2024.
"""

from __future__ import annotations

import torch
from torch import Tensor

INIT_RULES = ("official", "paper")
SCORES = ("official", "kl")
# rows per chunk of the [rows, c, c] tensor of the official score (bounds memory for c = 100)
_SCORE_CHUNK_ELEMS = 1 << 24


def _one_hot(index: Tensor, c: int) -> Tensor:
    return torch.nn.functional.one_hot(index, c).bool()


def init_unlabelled(probs: Tensor, rule: str = "official") -> Tensor:
    """Initial pseudo candidate sets of unlabelled data (Eq. 3).

    ``"paper"``: {k : f_k > 1/c}, the argmax when that is empty.
    ``"official"`` (authors' code): {k : f_k >= geometric mean of f}, never empty.
    """
    c = probs.shape[1]
    if rule == "paper":
        mask = probs > 1.0 / c
        empty = ~mask.any(dim=1, keepdim=True)
        return mask | (empty & _one_hot(probs.argmax(dim=1), c))
    if rule == "official":
        logp = probs.clamp_min(torch.finfo(probs.dtype).tiny).log()
        return logp >= logp.mean(dim=1, keepdim=True)
    raise ValueError(f"unknown init rule {rule!r}; choose one of: {', '.join(INIT_RULES)}")


def expand(probs: Tensor, mask: Tensor, prior: Tensor, allowed: Tensor | None = None) -> Tensor:
    """Label expansion (Eq. 11): add k where the pointwise MI is positive, f_k > p(k).

    With ``allowed`` (the original candidate sets of labelled data) only those labels
    may be (re-)added.
    """
    new = probs > prior.to(probs.dtype).unsqueeze(0)
    if allowed is not None:
        new &= allowed
    return mask | new


def _restricted(probs: Tensor, mask: Tensor) -> Tensor:
    """p~: f restricted to the mask and renormalised (zero rows stay zero)."""
    p = probs * mask
    total = p.sum(dim=1, keepdim=True)
    return p / torch.where(total > 0, total, torch.ones_like(total))


def _official_scores(pt: Tensor) -> Tensor:
    """G for a chunk of p~ rows, as the authors' code computes it (see information_scores)."""
    c = pt.shape[1]
    keep = 1.0 - torch.eye(c, dtype=pt.dtype, device=pt.device)            # [k, j]: j != k
    q = pt.unsqueeze(1) * keep                                               # [n, k, j]
    denom = q.sum(dim=2, keepdim=True)
    q = q / torch.where(denom > 0, denom, torch.ones_like(denom))
    log_q = torch.log_softmax(q, dim=1)                                      # softmax over k
    plogp = torch.special.xlogy(pt, pt).unsqueeze(1)                         # 0 log 0 = 0
    return (plogp - pt.unsqueeze(1) * log_q).sum(dim=2)                      # [n, k]


def information_scores(probs: Tensor, mask: Tensor, score: str = "official") -> Tensor:
    """Information score G_k of removing label k from each candidate set (Eq. 15).

    ``"kl"``: KL(p~ without k, renormalised || p~) = -log(1 - p~_k).
    ``"official"``: Q[k, :] is p~ with entry k zeroed and renormalised, L =
    log_softmax(Q) over the removed-label axis k, G_k = sum_j p~_j (log p~_j - L[k, j]).
    Entries outside the mask are NaN.
    """
    pt = _restricted(probs, mask)
    if score == "kl":
        g = -torch.log1p(-pt)
    elif score == "official":
        rows = max(1, _SCORE_CHUNK_ELEMS // (pt.shape[1] ** 2))
        g = torch.cat([_official_scores(chunk) for chunk in pt.split(rows)]) if len(pt) else pt.clone()
    else:
        raise ValueError(f"unknown score {score!r}; choose one of: {', '.join(SCORES)}")
    return g.masked_fill(~mask, float("nan"))


def condense(probs: Tensor, mask: Tensor, tau: float, score: str = "official") -> Tensor:
    """Label condensation (Eq. 15): in rows with |S| > 1 and max_{k in S} G_k > tau,
    remove argmin_{k in S} G_k (at most one label per row per pass)."""
    g = information_scores(probs, mask, score)
    fire = (mask.sum(dim=1) > 1) & (g.nan_to_num(nan=-torch.inf).amax(dim=1) > tau)
    weakest = g.nan_to_num(nan=torch.inf).argmin(dim=1)
    return mask & ~(fire.unsqueeze(1) & _one_hot(weakest, mask.shape[1]))


def class_prior(probs: Tensor) -> Tensor:
    """Class prior (Eq. 16 with alpha = 1, the prior is replaced): mean of probs over rows."""
    return probs.mean(dim=0)
