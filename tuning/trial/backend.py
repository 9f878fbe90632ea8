"""What produces a trial's epochs behind the trial spec: a ``TrialBackend``. The trial's
life around it (restore, MLflow run, reports, checkpoints, divergence) is the same for
every backend (``tuning.trial.run``). Today's one is ``TrainerBackend``, the ``spmi``
Trainer on the node's dataset; a backend that replays a recorded learning curve plugs in
under another name of ``tuning.trial.spec.BACKENDS``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch

from spmi.config import TrainConfig
from spmi.distributed import Comm, assert_in_sync
from spmi.trainer import Trainer
from tuning.plan.settings import TIME_ATTR
from tuning.trial.best import BestEpoch, BestTestSchedule
from tuning.trial.nodedata import node_dataset
from tuning.trial.spec import TrialSpec

CHECKPOINT_FILE = "checkpoint.pt"


class TrialBackend(Protocol):
    """One process's (one rank's) producer of epochs for the trial's config."""

    cfg: TrainConfig
    data_checksum: str

    @property
    def epoch(self) -> int:
        """Epochs done (after ``restore``, the checkpoint's)."""

    def restore(self, folder: Path) -> None:
        """Take up the state a checkpoint folder holds (``save`` wrote it)."""

    def fit(self, on_epoch: Callable[[dict[str, Any]], None]) -> None:
        """Run the remaining epochs, calling ``on_epoch`` with each epoch's metrics; raises
        ``spmi.trainer.Diverged`` when the loss becomes non-finite (on every rank at once)."""

    def record(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """The epoch's metrics plus what the backend keeps about it (``best/*``)."""

    def save(self, folder: Path, lead: bool) -> None:
        """Write its state into a checkpoint folder (every rank calls it; ``lead`` writes)."""


class TrainerBackend:
    """The ``spmi`` Trainer and the trial's best epoch (weights at its highest val/acc, in
    every checkpoint: ``tuning.trial.best``), whose test accuracy it measures at the rung
    epochs ``test_epochs`` and the last epoch (``BestTestSchedule``)."""

    def __init__(self, trainer: Trainer, best: BestEpoch | None = None, check_sync: bool = False,
                 data_checksum: str = "", test_epochs: tuple[int, ...] = (), metric: str = "val/acc"):
        self.trainer, self.best, self.check_sync = trainer, best or BestEpoch(metric), check_sync
        self.cfg = trainer.cfg
        self.data_checksum = data_checksum or trainer.data.checksum
        self.test_epochs = test_epochs
        self.test_at = BestTestSchedule(test_epochs, self.cfg.epochs)

    @classmethod
    def build(cls, cfg: TrainConfig, spec: TrialSpec, comm: Comm | None = None,
              check_sync: bool = False) -> TrainerBackend:
        """The Trainer of ``cfg`` on this node's dataset (checked against the driver's
        ``spec.data_checksum``), with the spec's CPU threads; ``comm``: the DDP ranks'."""
        torch.set_num_threads(max(1, int(spec.resources.cpus)))
        node = node_dataset(cfg, spec.data_checksum, of=spec.data_checksum_of)
        trainer = Trainer(cfg, node.data) if comm is None else Trainer(cfg, node.data, comm=comm, sync_bn=True)
        return cls(trainer, check_sync=check_sync, data_checksum=node.checksum, test_epochs=spec.test_epochs,
                   metric=spec.metric)

    @property
    def epoch(self) -> int:
        return self.trainer.epoch

    def restore(self, folder: Path) -> None:
        self.trainer.load(Path(folder) / CHECKPOINT_FILE)
        self.best = BestEpoch.load(folder, self.best.metric)
        self.test_at = BestTestSchedule(self.test_epochs, self.cfg.epochs, self.trainer.epoch)

    def fit(self, on_epoch: Callable[[dict[str, Any]], None]) -> None:
        if self.check_sync:
            self.trainer.callbacks.append(lambda metrics, t: assert_in_sync(t))
        self.trainer.callbacks.append(lambda metrics, t: on_epoch(metrics))
        self.trainer.fit()

    def record(self, metrics: dict[str, Any]) -> dict[str, Any]:
        # every rank holds the same metrics and weights: all take the same (collective) decisions
        record = epoch_record(metrics)
        return self.best.take(record, self.trainer, self.test_at.due(record[TIME_ATTR]))

    def save(self, folder: Path, lead: bool) -> None:
        self.trainer.save(Path(folder) / CHECKPOINT_FILE)  # collective under DDP; rank 0 writes
        if lead:
            self.best.save(folder)


def epoch_record(metrics: dict[str, Any]) -> dict[str, Any]:
    """A trainer epoch's metrics as logged and reported: ``epoch`` = epochs completed (1-based)."""
    return {**metrics, TIME_ATTR: int(metrics["epoch"]) + 1}


BACKENDS: dict[str, Callable[..., TrialBackend]] = {"trainer": TrainerBackend.build}
