"""Fixed configurations x seeds as one Ray Tune run: no searcher, no scheduler, every
trial trained to the full budget by the search's own trainable (single-process or DDP),
each an MLflow run. Shared by ``tuning/confirm.py`` and ``tuning/reproduce.py``.

A grid's plan (``<experiment>/<plan_file>``) holds its cells: per cell the flat base
config, the values set over it and the MLflow tags of its runs. Tune's grid is
``cell x seed``; a killed driver resumes with ``Tuner.restore`` like a search.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from spmi.atomic import write_atomic
from tuning.plan.settings import DRIVER_CPU, TRAIN_RUNS_DIR
from tuning.record import mlflow_log


@dataclass
class GridPlan:
    """Everything a grid run (and its resumption) needs; JSON-serialisable. The resource
    fields have the names ``runner.check_cluster`` reads."""

    name: str                # Tune run name: <storage_path>/<name>
    storage_path: str
    plan_file: str
    cells: dict[str, dict[str, Any]]   # key -> {"base": flat config, "values": {...}, "tags": {...}}
    seeds: list[int]
    epochs: int
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    role: str                # MLflow ``role`` tag of every run
    search: str              # MLflow ``search`` tag of every run
    git_commit: str = "unknown"
    cpus_per_trial: int = 1
    gpus_per_trial: float = 0.0
    workers_per_trial: int = 1
    check_sync: bool = False
    max_concurrent: int | None = None
    command: str = ""
    extra: dict[str, Any] = field(default_factory=dict)   # the command's own settings

    @property
    def storage(self) -> Any:
        """The grid's storage (a local folder or a shared mount), as the search runner reads it."""
        from tuning.record.storage import open_storage
        return open_storage(self.storage_path)

    @property
    def experiment_path(self) -> Path:
        return Path(self.storage_path) / self.name

    @property
    def num_trials(self) -> int:
        return len(self.cells) * len(self.seeds)

    def save(self) -> Path:
        text = json.dumps(dataclasses.asdict(self), indent=2)
        return write_atomic(self.experiment_path / self.plan_file, lambda f: f.write(text), "w")


def load_grid(path: Path) -> GridPlan:
    return GridPlan(**json.loads(path.read_text()))


def grid_trial(config: dict[str, Any], cells: dict[str, dict[str, Any]], meta: dict[str, Any]) -> None:
    """Tune trainable: ``config`` = {"cell": key, "seed": s}; trains the cell's config with
    that seed through the search's trainable (``train_trial`` or ``train_trial_ddp``)."""
    cell = cells[config["cell"]]
    values = {**cell["values"], "seed": int(config["seed"])}
    meta = {**meta, "tags": {**cell.get("tags", {}), "cell": config["cell"], "seed": int(config["seed"])}}
    if int(meta.get("workers", 1)) > 1:
        from tuning.trial.ddp import train_trial_ddp
        train_trial_ddp(values, cell["base"], meta)
    else:
        from tuning.trial.trainable import train_trial
        train_trial(values, cell["base"], meta)


def trainable(plan: GridPlan) -> Any:
    """The grid's trial function with its constants bound (the same on restore)."""
    from ray import tune
    meta = {"tracking_uri": plan.tracking_uri, "experiment_id": plan.experiment_id,
            "parent_run_id": plan.parent_run_id, "search": plan.search, "git_commit": plan.git_commit,
            "cpus": plan.cpus_per_trial, "role": plan.role}
    bound_cells = plan.cells
    if plan.workers_per_trial > 1:
        meta |= {"workers": plan.workers_per_trial, "gpus": plan.gpus_per_trial, "check_sync": plan.check_sync,
                 "storage": [plan.storage_path, None], "train_storage": [plan.name, TRAIN_RUNS_DIR]}
        return tune.with_resources(tune.with_parameters(grid_trial, cells=bound_cells, meta=meta), {"cpu": DRIVER_CPU})
    return tune.with_resources(tune.with_parameters(grid_trial, cells=bound_cells, meta=meta),
                               {"cpu": plan.cpus_per_trial, "gpu": plan.gpus_per_trial})


def build_tuner(plan: GridPlan) -> Any:
    from ray import tune

    from tuning.driver.callbacks import CloseTrialRuns, ReleaseTrainGroups
    from tuning.driver.runner import trial_dirname
    from tuning.plan.settings import METRIC, MODE
    return tune.Tuner(
        trainable(plan),
        param_space={"cell": tune.grid_search(list(plan.cells)), "seed": tune.grid_search(list(plan.seeds))},
        tune_config=tune.TuneConfig(metric=METRIC, mode=MODE, max_concurrent_trials=plan.max_concurrent,
                                    trial_dirname_creator=trial_dirname),
        run_config=tune.RunConfig(
            name=plan.name, storage_path=plan.storage_path, verbose=1,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            failure_config=tune.FailureConfig(max_failures=1),
            # no parent: a grid's runs must not move the search's best/* (it ranks searched trials)
            callbacks=[CloseTrialRuns(plan.tracking_uri, plan.experiment_id, plan.epochs)]
            + ([ReleaseTrainGroups()] if plan.workers_per_trial > 1 else [])))


def run_grid(plan: GridPlan, resumed: bool, address: str | None) -> dict[str, str] | None:
    """Run (or resume) the grid on a local Ray or ``address``; the Tune status of every
    trial, or None when the cluster cannot place a trial (message printed)."""
    import ray
    from ray import tune

    from tuning.driver.runner import check_cluster, start_ray, trial_states
    start_ray(address, plan.workers_per_trial)
    signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
    try:
        try:
            check_cluster(plan)  # type: ignore[arg-type]  (reads the same resource fields)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return None
        path = str(plan.experiment_path)
        if resumed and tune.Tuner.can_restore(path):
            print(f"resuming {path}", flush=True)
            tuner = tune.Tuner.restore(path, trainable=trainable(plan), resume_unfinished=True, resume_errored=True)
        else:
            tuner = build_tuner(plan)
        tuner.fit()
        states = trial_states(plan)  # type: ignore[arg-type]
    finally:
        ray.shutdown()
    mlflow_log.finalize_runs(plan.tracking_uri, plan.experiment_id, plan.parent_run_id, states)
    return states


def all_done(plan: GridPlan, states: dict[str, str]) -> bool:
    return sum(s in ("TERMINATED", "ERROR") for s in states.values()) >= plan.num_trials


def results(plan: GridPlan) -> pd.DataFrame:
    """One row per run: cell, seed, status, epochs, final val/acc and test/acc, and the
    best-val epoch's val/acc, test/acc and number (``tuning.results.trials`` columns)."""
    from tuning.record.storage import open_storage
    from tuning.results.trials import read_trials
    table = read_trials(open_storage(plan.storage_path), plan.name, ["cell", "seed"], plan.epochs).table
    return table.drop(columns=["trial_dir"]).sort_values(["cell", "seed"]).reset_index(drop=True)
