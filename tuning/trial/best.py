"""A trial's best epoch: the network's weights at its highest ``val/acc`` so far, kept in
every checkpoint the trial writes (``best.pt`` beside ``checkpoint.pt``), so the latest
checkpoint, which Tune keeps and resumes from, always carries the best one too.

The search decides on ``val/acc`` alone, so the test set is measured only where a trial may
end (``BestTestSchedule``): on the best epoch's weights at ASHA's rung epochs and at the last
epoch, whose own weights the trainer measures too (``eval_test: end``).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from spmi.checkpoint import load, save_atomic
from spmi.trainer import Trainer
from tuning.plan.settings import METRIC, TIME_ATTR

BEST_FILE = "best.pt"
TEST_METRIC, TEST_EPOCH = "test/acc", "test/epoch"
TEST_TIME = "time/best_test"  # seconds a record's epoch spent measuring the best weights' test accuracy


@dataclass(frozen=True)
class BestTestSchedule:
    """The epochs (completed, 1-based) after which a trial measures the test accuracy of its
    best weights: ASHA's rungs (``rungs``: where it may be stopped; none without ASHA) and its
    ``last`` epoch. A trial restored from a checkpoint after ``resumed`` epochs also measures
    at its first epoch at or past the first rung: a resumed search's ASHA starts with empty
    rungs and decides on each restored trial's first result there."""

    rungs: tuple[int, ...]
    last: int
    resumed: int = 0

    def due(self, done: int) -> bool:
        first_rung = min(self.rungs, default=self.last)
        return (done in self.rungs or done >= self.last
                or (self.resumed > 0 and done == self.resumed + 1 and done >= first_rung))


@dataclass(frozen=True)
class NetworkSpec:
    """What rebuilding the network and its input preparation needs (saved in ``best.pt``)."""

    model: str
    num_classes: int
    channels: int
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channels_last: bool
    precision: str
    dataset: str
    data_root: str
    verify_data: bool
    eval_batch_size: int

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NetworkSpec:
        """(``precision`` was added later: older checkpoints trained in fp32.)"""
        return cls(**{"precision": "fp32", **data, "mean": tuple(data["mean"]), "std": tuple(data["std"])})


class BestEpoch:
    """The best epoch seen so far by the search's ``metric`` (strictly higher; the earlier
    epoch wins ties): its ``score``, its ``val_acc`` (the clean-label oracle, NaN where not
    measured) and ``test_acc``, its weights' test accuracy once measured (NaN until then)."""

    def __init__(self, metric: str = METRIC) -> None:
        self.metric = metric
        self.epoch: int | None = None
        self.score = -math.inf
        self.val_acc = math.nan
        self.test_acc = math.nan
        self.weights: dict[str, torch.Tensor] | None = None
        self.network: NetworkSpec | None = None

    def update(self, record: dict[str, Any], trainer: Trainer) -> bool:
        """Take this epoch if its ``metric`` beats the best; whether it did."""
        score = record.get(self.metric)
        if score is None or not math.isfinite(float(score)) or float(score) <= self.score:
            return False
        self.epoch, self.score = int(record[TIME_ATTR]), float(score)
        self.val_acc = float(record.get(METRIC, math.nan))
        self.test_acc = float(record[TEST_METRIC]) if measured_now(record) else math.nan
        self.weights = {k: v.detach().to("cpu", copy=True) for k, v in trainer.model.state_dict().items()}
        self.network = network_spec(trainer)
        return True

    def measure(self, trainer: Trainer) -> float:
        """Measure the kept weights' test accuracy unless known (collective under DDP: every
        rank calls it); the seconds it took."""
        if self.weights is None or not math.isnan(self.test_acc):
            return 0.0
        start = time.perf_counter()
        current = self.epoch == trainer.epoch  # the network holds the best weights itself
        self.test_acc = trainer.test_accuracy(None if current else self.weights)
        return time.perf_counter() - start

    def take(self, record: dict[str, Any], trainer: Trainer, due: bool) -> dict[str, Any]:
        """An epoch's record with the best epoch's metrics; when ``due`` the best weights' test
        accuracy is measured first, and a record whose own weights were not tested carries it
        as ``test/acc`` with ``test/epoch`` (the trainer's 0-based epoch) naming the best epoch."""
        self.update(record, trainer)
        if due:
            record[TEST_TIME] = self.measure(trainer)
            if not measured_now(record) and self.epoch is not None:
                record |= {TEST_METRIC: self.test_acc, TEST_EPOCH: self.epoch - 1}
        return record | self.metrics()

    def metrics(self) -> dict[str, float]:
        """``best/val_acc`` (where measured), ``best/epoch``, ``best/score`` (the metric's
        value) and, once measured, ``best/test_acc`` (empty before the first epoch)."""
        if self.epoch is None:
            return {}
        out = {"best/epoch": self.epoch, "best/score": self.score}
        if not math.isnan(self.val_acc):
            out["best/val_acc"] = self.val_acc
        return out if math.isnan(self.test_acc) else out | {"best/test_acc": self.test_acc}

    def save(self, folder: str | Path) -> Path | None:
        if self.weights is None:
            return None
        return save_atomic({"epoch": self.epoch, "metric": self.metric, "score": self.score,
                            "val_acc": self.val_acc, "test_acc": self.test_acc,
                            "model": self.weights, "network": self.network.to_dict() if self.network else {}},
                           Path(folder) / BEST_FILE)

    @classmethod
    def load(cls, folder: str | Path, metric: str = METRIC) -> BestEpoch:
        """From a checkpoint folder (an empty record of ``metric`` when it holds no ``best.pt``;
        a file written before the metric was a choice holds val/acc's)."""
        best = cls(metric)
        path = Path(folder) / BEST_FILE
        if path.exists():
            state = load(path)
            best.metric = state.get("metric", METRIC)
            best.epoch, best.val_acc, best.test_acc = int(state["epoch"]), state["val_acc"], state["test_acc"]
            best.score = float(state.get("score", best.val_acc))
            best.weights = state["model"]
            best.network = NetworkSpec.from_dict(state["network"]) if state["network"] else None
        return best


def measured_now(record: dict[str, Any]) -> bool:
    """Whether an epoch record's ``test/acc`` was measured on that epoch's weights (not carried
    from an earlier epoch: ``test/epoch``, when present, names the trainer's 0-based epoch)."""
    if TEST_METRIC not in record:
        return False
    return int(record.get(TEST_EPOCH, record[TIME_ATTR] - 1)) == int(record[TIME_ATTR]) - 1


def network_spec(trainer: Trainer) -> NetworkSpec:
    """What rebuilding the trainer's network and its input preparation needs."""
    cfg, info = trainer.cfg, trainer.data.info
    return NetworkSpec(model=cfg.model or info.model, num_classes=info.num_classes, channels=info.channels,
                       size=info.size, mean=tuple(trainer.augmenter.mean), std=tuple(trainer.augmenter.std),
                       channels_last=bool(cfg.channels_last), precision=cfg.precision, dataset=cfg.dataset,
                       data_root=cfg.data_root, verify_data=bool(cfg.verify_data),
                       eval_batch_size=cfg.eval_batch_size)
