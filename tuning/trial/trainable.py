"""The Tune trainable of every trial: ``train_trial(config, spec)`` runs the trial spec at
the trial's point, in this process (``LocalStrategy``) or as a Ray Train DDP run of
``spec.resources.workers`` workers (``tuning.trial.ddp``).

Each epoch the trial logs its metrics to its MLflow run, saves its full state with the
run id into a checkpoint and reports ``epoch`` (epochs completed) and the scalar metrics.
A restored trial loads its checkpoint and continues the same MLflow run (``tuning.trial.run``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ray import tune

from tuning.plan.settings import DRIVER_CPU, TIME_ATTR
from tuning.record import mlflow_log
from tuning.record.storage import Storage
from tuning.trial import ddp
from tuning.trial.diverged import TrialDiverged, diverged_record
from tuning.trial.run import TrialInfo, run_trial
from tuning.trial.spec import Tracking, TrialSpec
from tuning.trial.strategy import LocalStrategy

TRIAL_DIR = "trial_{}"  # a trial's folder in the experiment folder, by trial id


def train_trial(config: dict[str, Any], spec: TrialSpec) -> None:
    """``config``: Tune's (the searched values, or a grid's cell and seed); ``spec``: bound
    with ``tune.with_parameters`` (``tune_trainable``)."""
    logging.getLogger("ray.train").setLevel(logging.WARNING)  # no line per checkpoint
    ctx = tune.get_context()
    trial = TrialInfo(ctx.get_trial_id(), ctx.get_trial_name(), str(trial_folder(spec, ctx)))
    before = diverged_record(trial.folder)
    if before is not None:  # Tune retries a failed trial: a diverged one must not train again
        raise TrialDiverged(before["message"])
    if report_if_completed(spec.tracking, trial.id):
        return
    if spec.resources.workers > 1:
        ddp.run_ddp(config, spec, trial)
    else:
        run_trial(config, spec, trial, LocalStrategy())


def tune_trainable(spec: TrialSpec) -> Any:
    """``train_trial`` with ``spec`` bound and the resources one trial holds: its own, or,
    with DDP, the idle driver's CPU share (the workers hold the rest)."""
    bound = tune.with_parameters(train_trial, spec=spec)
    if spec.resources.workers > 1:
        return tune.with_resources(bound, {"cpu": DRIVER_CPU})
    return tune.with_resources(bound, {"cpu": spec.resources.cpus, "gpu": spec.resources.gpus})


def trial_dirname(trial: Any) -> str:
    """A trial's folder name in the experiment folder (Tune's ``trial_dirname_creator``). Tune
    pickles this function by its import path into every trial's saved state: moving it makes
    existing searches unreadable unless the old path stays (as ``tuning/runner.py`` does)."""
    return TRIAL_DIR.format(trial.trial_id)


def trial_folder(spec: TrialSpec, ctx: Any) -> Path:
    """The trial's folder under the search's storage path (it outlives the Ray session, so a
    resumed search sees what an earlier one wrote); Ray's working folder when that storage is
    not a local folder."""
    storage = Storage(spec.location.root, spec.location.endpoint)
    if storage.local:
        path = Path(storage.path(spec.location.experiment, TRIAL_DIR.format(ctx.get_trial_id())))
        if path.is_dir():
            return path
    return Path(ctx.get_trial_dir())


def report_if_completed(tracking: Tracking, trial_id: str) -> bool:
    """A resumed search may restart a trial that the killed driver had already seen
    complete (ASHA stopped it, or it reached the last epoch) before its experiment snapshot
    recorded that. Such a trial must not train on: report its final result again (so Tune,
    ASHA and the searcher see it) and tell the caller to return."""
    done = mlflow_log.completed_result(tracking.uri, tracking.experiment_id, trial_id)
    if done is None:
        return False
    done[TIME_ATTR] = int(done.get(TIME_ATTR, 0))
    tune.report(done)
    return True
