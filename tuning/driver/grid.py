"""Fixed configurations x seeds as one Ray Tune run: no searcher, no scheduler, every
trial trained to the full budget by the search's own trainable (single-process or DDP),
each an MLflow run. Shared by ``tuning/confirm.py`` and ``tuning/reproduce.py``; the
grid's plan is ``tuning.plan.grid_plan``. Tune's grid is ``cell x seed``; a killed driver
resumes with ``Tuner.restore`` like a search.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys

import ray
from ray import tune

from tuning.driver.callbacks import CloseTrialRuns, ReleaseTrainGroups
from tuning.driver.cluster import check_cluster, start_ray, trial_states
from tuning.plan.grid_plan import GridPlan
from tuning.plan.settings import METRIC, MODE
from tuning.record import mlflow_log
from tuning.record.storage import open_storage
from tuning.trial.ray_internals import tune_keeps_credentials
from tuning.trial.spec import Location, Resources, Tracking, TrialSpec
from tuning.trial.trainable import trial_dirname, tune_trainable


def trial_spec(plan: GridPlan) -> TrialSpec:
    """What every run of the grid receives: its cells, tracking and resources."""
    return TrialSpec(
        tracking=Tracking(plan.tracking_uri, plan.experiment_id, plan.parent_run_id, plan.search, plan.git_commit,
                          role=plan.role),
        resources=grid_resources(plan), location=Location(plan.storage_path, plan.name), cells=plan.cells,
        metric=plan.metric)


def grid_resources(plan: GridPlan) -> Resources:
    return Resources(plan.cpus_per_trial, plan.gpus_per_trial, plan.workers_per_trial, plan.check_sync)


def build_tuner(plan: GridPlan) -> tune.Tuner:
    return tune.Tuner(
        tune_trainable(trial_spec(plan)),
        param_space={"cell": tune.grid_search([c.key for c in plan.cells]), "seed": tune.grid_search(list(plan.seeds))},
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
    start_ray(address, plan.workers_per_trial)
    signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
    try:
        try:
            fit = check_cluster(grid_resources(plan))
            if plan.max_concurrent is None:  # as many as the cluster allows, kept for the resumption
                plan = dataclasses.replace(plan, max_concurrent=fit)
                plan.save()
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return None
        path = str(plan.experiment_path)
        if resumed and tune.Tuner.can_restore(path):
            print(f"resuming {path}", flush=True)
            tuner = tune.Tuner.restore(path, trainable=tune_trainable(trial_spec(plan)), resume_unfinished=True,
                                       resume_errored=True)
        else:
            tuner = build_tuner(plan)
        with tune_keeps_credentials():  # the nodes have their own credentials
            tuner.fit()
        states = trial_states(open_storage(plan.storage_path), plan.name)
    finally:
        ray.shutdown()
    mlflow_log.finalize_runs(plan.tracking_uri, plan.experiment_id, plan.parent_run_id, states)
    return states


def all_done(plan: GridPlan, states: dict[str, str]) -> bool:
    return sum(s in ("TERMINATED", "ERROR") for s in states.values()) >= plan.num_trials
