"""How one trial process takes part in its trial: a ``Strategy``. The single-process and
the DDP trial differ only here: which device the process trains on, how its ranks agree
(``comm``), which process logs and writes (``lead``), where it finds its checkpoint and
how it reports an epoch. ``LocalStrategy`` is the single-process one (Ray Tune's session);
the DDP one is ``tuning.trial.ddp.RankStrategy``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from ray import tune
from ray.tune import Checkpoint

from spmi.config import TrainConfig
from spmi.distributed import Comm
from tuning.record import mlflow_log


class Strategy(Protocol):
    lead: bool                 # this process logs to MLflow and writes the checkpoint's extras
    comm: Comm | None          # how the ranks agree (None: one process)
    check_sync: bool           # check after every epoch that all ranks hold the same state

    def place(self, cfg: TrainConfig) -> TrainConfig:
        """``cfg`` on the device this process trains on."""

    def checkpoint(self) -> Any | None:
        """The checkpoint this trial resumes from (a Ray Checkpoint), or None."""

    def report(self, scalars: dict[str, Any], folder: str | Path, done: int) -> None:
        """Report an epoch (``done`` epochs completed) with the checkpoint ``folder``."""

    def spool(self, trial_folder: str | Path) -> Path | None:
        """Where the trial keeps the epochs MLflow did not take (an outage), or None."""


class LocalStrategy:
    """A single-process trial: the Tune trial itself trains and reports."""

    lead, comm, check_sync = True, None, False

    def place(self, cfg: TrainConfig) -> TrainConfig:
        return cfg

    def checkpoint(self) -> Any | None:
        return tune.get_checkpoint()

    def report(self, scalars: dict[str, Any], folder: str | Path, done: int) -> None:
        tune.report(scalars, checkpoint=Checkpoint.from_directory(str(folder)))

    def spool(self, trial_folder: str | Path) -> Path | None:
        return Path(trial_folder) / mlflow_log.SPOOL_FILE
