"""The small interface through which a training method plugs into the trainer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from spmi.comm import Comm


@dataclass
class MethodContext:
    """What a method knows about the run. Index tensors live on ``device``.

    ``lab_targets``/``unl_targets`` are the hidden true labels: diagnostics only.
    ``unl_to_lab`` gives, per unlabelled image, its position in the labelled set or -1.
    """

    num_classes: int
    device: torch.device
    candidates: Tensor        # bool [l, c], the given partial labels S^0
    lab_targets: Tensor       # int64 [l]
    unl_targets: Tensor       # int64 [N_u]
    unl_to_lab: Tensor        # int64 [N_u]
    epochs: int
    comm: Comm

    @property
    def n_labelled(self) -> int:
        return len(self.candidates)

    @property
    def n_unlabelled(self) -> int:
        return len(self.unl_targets)


class Batch:
    """One step's images: positions into the labelled and unlabelled sets, and their
    augmented views, made on first use (``view("lab" | "unl", "weak" | "strong")``)."""

    def __init__(self, lab: Tensor, unl: Tensor, make_view: Callable[[str, str, Tensor], Tensor]):
        self.lab, self.unl = lab, unl
        self._make_view = make_view
        self._cache: dict[tuple[str, str], Tensor] = {}

    def view(self, part: str, kind: str) -> Tensor:
        key = (part, kind)
        if key not in self._cache:
            self._cache[key] = self._make_view(part, kind, self.lab if part == "lab" else self.unl)
        return self._cache[key]


Predict = Callable[[str], Tensor]
"""``predict("lab" | "unl")``: softmax outputs [n, c] of the whole set (eval mode, weak
view, no grad), identical on every rank."""


class Method:
    """Base class of a training method.

    A subclass sets ``name`` and ``Options`` (a dataclass of its hyperparameters, each
    declared with ``spmi.options.option``: limits, help, and roles such as ``starts=`` for an
    epoch that delays a phase; it receives the resolved instance as ``opts``), lists
    its per-run tensors in ``state_names`` (saved in checkpoints) and implements ``loss``.
    Under DDP every rank must hold the same state, except the names in ``rank_local``
    (per-rank counters, all-reduced when reported).
    """

    name: ClassVar[str]
    Options: ClassVar[type]
    state_names: ClassVar[tuple[str, ...]] = ()
    rank_local: ClassVar[tuple[str, ...]] = ()

    def __init__(self, opts: Any, ctx: MethodContext):
        self.opts, self.ctx = opts, ctx

    def epoch_start(self, epoch: int, predict: Predict) -> None:
        """Called before each epoch's steps, with the model in eval mode."""

    def loss(self, model: nn.Module, batch: Batch, epoch: int) -> tuple[Tensor, dict[str, Tensor]]:
        """The step's loss and its detached parts (logged as ``loss/<part>``)."""
        raise NotImplementedError

    def diagnostics(self) -> dict[str, Any]:
        """Per-epoch measurements of the method's state (candidate sets, prior, ...)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.state_names}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Copies of the saved values, so in-place updates never reach ``state``."""
        for name in self.state_names:
            value = state[name]
            if isinstance(value, Tensor):
                value = value.to(getattr(self, name).device, copy=True)
            setattr(self, name, value)


def weighted_nll(logp: Tensor, weights: Tensor) -> Tensor:
    """Per-row -sum_k w_k log f_k (the PRODEN / SPMI candidate loss, Eq. 1-2)."""
    return -(weights * logp).sum(dim=1)


def normalise_rows(x: Tensor) -> Tensor:
    """Rows scaled to sum 1 (all-zero rows stay zero)."""
    total = x.sum(dim=1, keepdim=True)
    return x / torch.where(total > 0, total, torch.ones_like(total))


def set_stats(mask: Tensor, targets: Tensor) -> tuple[float, float]:
    """Mean candidate-set size and share of sets holding the true label."""
    if len(mask) == 0:
        return 0.0, 0.0
    size = mask.sum(dim=1).float().mean()
    cover = mask.gather(1, targets.unsqueeze(1)).float().mean()
    return float(size), float(cover)
