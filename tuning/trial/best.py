"""A trial's best epoch: the network's weights at its highest ``val/acc`` so far, kept in
every checkpoint the trial writes (``best.pt`` beside ``checkpoint.pt``), so the latest
checkpoint, which Tune keeps and resumes from, always carries the best one too."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from spmi.checkpoint import load, save_atomic
from spmi.trainer import Trainer
from tuning.plan.settings import METRIC, TIME_ATTR

BEST_FILE = "best.pt"
TEST_METRIC = "test/acc"


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
    """The best epoch seen so far (strictly higher ``val/acc``; the earlier epoch wins ties)."""

    def __init__(self) -> None:
        self.epoch: int | None = None
        self.val_acc = -math.inf
        self.test_acc = math.nan
        self.weights: dict[str, torch.Tensor] | None = None
        self.network: NetworkSpec | None = None

    def update(self, record: dict[str, Any], trainer: Trainer) -> bool:
        """Take this epoch if its val/acc beats the best; whether it did."""
        val = record.get(METRIC)
        if val is None or not math.isfinite(float(val)) or float(val) <= self.val_acc:
            return False
        self.epoch, self.val_acc = int(record[TIME_ATTR]), float(val)
        self.test_acc = float(record.get(TEST_METRIC, math.nan))
        self.weights = {k: v.detach().to("cpu", copy=True) for k, v in trainer.model.state_dict().items()}
        self.network = network_spec(trainer)
        return True

    def metrics(self) -> dict[str, float]:
        """``best/val_acc``, ``best/test_acc``, ``best/epoch`` (empty before the first)."""
        if self.epoch is None:
            return {}
        return {"best/val_acc": self.val_acc, "best/test_acc": self.test_acc, "best/epoch": self.epoch}

    def save(self, folder: str | Path) -> Path | None:
        if self.weights is None:
            return None
        return save_atomic({"epoch": self.epoch, "val_acc": self.val_acc, "test_acc": self.test_acc,
                            "model": self.weights, "network": self.network.to_dict() if self.network else {}},
                           Path(folder) / BEST_FILE)

    @classmethod
    def load(cls, folder: str | Path) -> BestEpoch:
        """From a checkpoint folder (an empty record when it holds no ``best.pt``)."""
        best = cls()
        path = Path(folder) / BEST_FILE
        if path.exists():
            state = load(path)
            best.epoch, best.val_acc, best.test_acc = int(state["epoch"]), state["val_acc"], state["test_acc"]
            best.weights = state["model"]
            best.network = NetworkSpec.from_dict(state["network"]) if state["network"] else None
        return best


def network_spec(trainer: Trainer) -> NetworkSpec:
    """What rebuilding the trainer's network and its input preparation needs."""
    cfg, info = trainer.cfg, trainer.data.info
    return NetworkSpec(model=cfg.model or info.model, num_classes=info.num_classes, channels=info.channels,
                       size=info.size, mean=tuple(trainer.augmenter.mean), std=tuple(trainer.augmenter.std),
                       channels_last=bool(cfg.channels_last), precision=cfg.precision, dataset=cfg.dataset,
                       data_root=cfg.data_root, verify_data=bool(cfg.verify_data),
                       eval_batch_size=cfg.eval_batch_size)
