"""The Ray part of a search: start or join a cluster, build (or restore) the Tuner with
Optuna TPE, a concurrency limit and ASHA, run it, close the MLflow runs, write the report."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import signal
import sys
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, HyperBandScheduler, TrialScheduler
from ray.tune.search import ConcurrencyLimiter

from spmi.cli_options import invoked_as
from tuning.driver import cost_watch
from tuning.driver.callbacks import CloseTrialRuns, ReleaseTrainGroups
from tuning.driver.cluster import check_cluster, runtime_env, start_ray, trial_states
from tuning.driver.searcher import AshaOptunaSearch, use_study_url
from tuning.plan import cost
from tuning.plan.search_plan import SearchPlan
from tuning.plan.settings import TIME_ATTR
from tuning.record import mlflow_log, optuna_study
from tuning.trial.ray_internals import tune_keeps_credentials
from tuning.trial.spec import Location, Resources, Tracking, TrialSpec
from tuning.trial.trainable import trial_dirname, tune_trainable


def trial_spec(plan: SearchPlan) -> TrialSpec:
    """What every trial of the search receives (built and checked here, once), with ASHA's
    rung epochs: where a trial may be stopped, it measures its best weights' test accuracy
    (``tuning.trial.best.BestTestSchedule``)."""
    return TrialSpec(
        tracking=Tracking(plan.tracking_uri, plan.experiment_id, plan.parent_run_id, plan.name, plan.git_commit),
        resources=trial_resources(plan), location=Location(plan.storage_path, plan.name, plan.storage_endpoint),
        base=plan.base_config, data_checksum=plan.data_checksum, data_checksum_of=plan.data_checksum_of,
        test_epochs=stop_epochs(plan), metric=plan.metric)


def trial_resources(plan: SearchPlan) -> Resources:
    return Resources(plan.cpus_per_trial, plan.gpus_per_trial, plan.workers_per_trial, plan.check_sync)


def make_searcher(plan: SearchPlan, space: Any) -> AshaOptunaSearch:
    """The plan's sampler (TPE with its explicit settings, random or grid) on the search's
    persistent study; a grid enqueues no extra points (its own are the search)."""
    tpe = plan.tpe or optuna_study.tpe_settings(plan.num_samples, plan.max_concurrent, plan.seed)
    grid = space.grid() if plan.searcher == "grid" else None
    sampler = optuna_study.make_proposer(plan.searcher, tpe, plan.seed, grid)
    return AshaOptunaSearch(space=space.to_optuna, metric=plan.metric, mode=plan.mode,
                            storage_url=plan.optuna_storage, study_name=plan.name, sampler=sampler,
                            max_epochs=plan.max_epochs,
                            points_to_evaluate=[] if grid else space.points_to_evaluate(), epoch_rule=plan.epoch_rule)


def make_scheduler(plan: SearchPlan) -> TrialScheduler:
    """Ray's scheduler of ``--scheduler``: ASHA (grace period, reduction factor), HyperBand
    (reduction factor; it pauses trials at its brackets' milestones and resumes them from
    their checkpoints) or FIFO (no trial stopped early)."""
    if plan.scheduler == "hyperband":
        return HyperBandScheduler(time_attr=TIME_ATTR, max_t=plan.max_epochs, reduction_factor=plan.reduction_factor)
    if plan.scheduler == "fifo":
        return FIFOScheduler()
    return ASHAScheduler(time_attr=TIME_ATTR, max_t=plan.max_epochs, grace_period=plan.grace_period,
                         reduction_factor=plan.reduction_factor)


def stop_epochs(plan: SearchPlan) -> tuple[int, ...]:
    """The epochs at which the scheduler may stop (or pause) a trial, where it measures its best
    weights' test accuracy: ASHA's rungs; HyperBand's bracket milestones, max_t / eta^k; none for FIFO."""
    if plan.scheduler == "fifo":
        return ()
    if plan.scheduler == "hyperband":
        eta, out, k = plan.reduction_factor, set(), 1
        while plan.max_epochs / eta**k >= 1:
            out.add(math.ceil(plan.max_epochs / eta**k))
            k += 1
        return tuple(sorted(out))
    return tuple(asha_of(plan).rungs())


def build_tuner(plan: SearchPlan) -> tune.Tuner:
    space = plan.space()
    searcher = make_searcher(plan, space)
    scheduler = make_scheduler(plan)
    storage_path, storage_fs = plan.storage.ray_location()
    return tune.Tuner(
        tune_trainable(trial_spec(plan)),
        tune_config=tune.TuneConfig(metric=plan.metric, mode=plan.mode, num_samples=plan.num_samples,
                                    search_alg=ConcurrencyLimiter(searcher, max_concurrent=plan.max_concurrent),
                                    scheduler=scheduler, trial_dirname_creator=trial_dirname,
                                    # a finished trial's process runs the next one: torch, MLflow and
                                    # the dataset are loaded once per process, not once per trial
                                    reuse_actors=plan.workers_per_trial == 1),
        run_config=tune.RunConfig(
            name=plan.name, storage_path=storage_path, storage_filesystem=storage_fs, verbose=1,
            progress_reporter=reporter(plan, space),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            failure_config=tune.FailureConfig(max_failures=1),
            callbacks=[CloseTrialRuns(plan.tracking_uri, plan.experiment_id, plan.max_epochs,
                                      parent_run_id=plan.parent_run_id, scheme=plan.storage.scheme, metric=plan.metric),
                       cost_watch.CostWatch(plan.tracking_uri, plan.parent_run_id, plan.num_samples,
                                            plan.max_concurrent or 1, asha_of(plan))]
            + ([ReleaseTrainGroups()] if plan.workers_per_trial > 1 else [])))


def asha_of(plan: SearchPlan) -> cost.Asha:
    """The scheduler as the cost model sees it: FIFO runs every trial to the end; HyperBand
    is priced like ASHA from its first milestone."""
    if plan.scheduler == "fifo":
        return cost.Asha(plan.max_epochs, plan.max_epochs, plan.reduction_factor)
    if plan.scheduler == "hyperband":
        return cost.Asha(plan.max_epochs, min(stop_epochs(plan), default=plan.max_epochs), plan.reduction_factor)
    return cost.Asha(plan.max_epochs, plan.grace_period, plan.reduction_factor)


def reporter(plan: SearchPlan, space: Any) -> tune.CLIReporter:
    """A compact status table: searched values, epoch and accuracies (needs RAY_AIR_NEW_OUTPUT=0)."""
    return tune.CLIReporter(parameter_columns=list(space.params), max_report_frequency=30,
                            metric_columns={TIME_ATTR: "epoch", plan.metric: plan.metric, "val/acc": "val/acc",
                                            "test/acc": "test/acc"},
                            sort_by_metric=True)


def run_search(plan: SearchPlan, resumed: bool, address: str | None, time_budget: float | None = None,
               forward_secrets: bool = False) -> int:
    cost_watch.set_budget(time_budget)
    start_ray(address, plan.workers_per_trial, runtime_env(plan, forward_secrets))
    # after ray.init (which installs its own): a job manager's SIGTERM takes Tune's graceful
    # SIGINT path, so the state is saved and the search can be resumed
    signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
    try:
        try:
            fit = check_cluster(trial_resources(plan))
            if plan.max_concurrent is None:  # as many as the cluster allows, kept for the resumption
                plan = dataclasses.replace(plan, max_concurrent=fit)
                plan.save()
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            mlflow_log.terminate(plan.tracking_uri, plan.parent_run_id, "FAILED")
            return 2
        path, fs = plan.storage.ray_location(plan.name)
        if resumed:
            mlflow_log.reopen(plan.tracking_uri, plan.parent_run_id)
        if resumed and tune.Tuner.can_restore(path, storage_filesystem=fs) and has_snapshot(plan):
            print(f"resuming {plan.experiment_path}", flush=True)
            use_study_url(plan.name, plan.optuna_storage)  # the searcher in tuner.pkl: where the study is now
            tuner = tune.Tuner.restore(path, trainable=tune_trainable(trial_spec(plan)), resume_unfinished=True,
                                       resume_errored=True, storage_filesystem=fs)
        else:
            tuner = build_tuner(plan)
        try:  # the nodes have their own credentials, unless --forward-secrets
            with contextlib.nullcontext() if forward_secrets else tune_keeps_credentials():
                tuner.fit()
        except Exception:
            mlflow_log.terminate(plan.tracking_uri, plan.parent_run_id, "FAILED")
            raise
        states = trial_states(plan.storage, plan.name)
    finally:
        ray.shutdown()
    return finish(plan, states)


def has_snapshot(plan: SearchPlan) -> bool:
    """Whether Tune saved an experiment-state snapshot of the search. A driver killed before
    the first one leaves only ``tuner.pkl``, whose restore would start the run anew with one
    trial (Ray's resumed ``fit`` does not pass ``num_samples``): such a search starts anew,
    its new searcher over the existing study (``tuning.driver.searcher``: no point twice)."""
    return any(e.base_name.startswith("experiment_state-") and e.base_name.endswith(".json")
               for e in plan.storage.listdir(plan.name))


def finished(states: dict[str, str]) -> int:
    """How many of the trials (trial id -> Ray Tune status) have ended."""
    return sum(s in ("TERMINATED", "ERROR") for s in states.values())


def interrupted(what: str, done: int, total: int, unit: str, command: str) -> int:
    """Print that ``what`` (search, confirmation, table) stopped with runs left and the
    command that continues it; the exit status 130."""
    print(f"{what} interrupted ({done}/{total} {unit} done); continue it with:\n  {command}", flush=True)
    return 130


def finish(plan: SearchPlan, states: dict[str, str]) -> int:
    """Close the runs, write and log the report, print the outcome."""
    done = finished(states)
    if done < plan.num_samples and cost_watch.budget_reached():  # a report of what finished
        from tuning.results.report import make_report
        print(make_report(plan.experiment_path, endpoint=plan.storage_endpoint).summary(), flush=True)
    if done < plan.num_samples:
        endpoint = f" --storage-endpoint {plan.storage_endpoint}" if plan.storage_endpoint else ""
        return interrupted("search", done, plan.num_samples, "trials",
                           f"{invoked_as('tuning.search', 'python tuning/search.py')} --dataset {plan.dataset} "
                           f"--method {plan.method} --storage-path "
                           f"{plan.storage_path}{endpoint} --name {plan.name} --resume")
    uri = plan.tracking_uri
    # every step below outlasts a tracking-server outage (MLflow's retries, then a slower loop)
    spools = sorted(Path(plan.experiment_path).glob(f"*/{mlflow_log.SPOOL_FILE}")) if plan.storage.local else []
    for spool in spools:  # (on object storage a trial keeps its spool in its node's Ray folder)
        mlflow_log.outage_retry(lambda spool=spool: mlflow_log.replay_spool(uri, spool), "replaying kept epochs")
    mlflow_log.outage_retry(lambda: mlflow_log.finalize_runs(uri, plan.experiment_id, plan.parent_run_id, states),
                            "closing the trial runs")
    if plan.optuna_storage:
        optuna_study.fail_running(plan.optuna_storage, plan.name)
    from tuning.results.report import make_report
    report = make_report(plan.experiment_path, endpoint=plan.storage_endpoint)
    published = None
    try:
        from tuning.results.publish import publish_search_best
        published = publish_search_best(plan, report.best)
    except Exception as err:  # the search's results stand without the published model
        print(f"warning: could not log or register the best model in MLflow: {err}", file=sys.stderr)
    errors = sum(s == "ERROR" for s in states.values())
    status = "FAILED" if errors == len(states) else "FINISHED"
    mlflow_log.outage_retry(lambda: mlflow_log.terminate(uri, plan.parent_run_id, status), "closing the search run")
    print(report.summary(), flush=True)
    if published is not None:
        print(f"best model (epoch {published.epoch}): {published.registered_uri} (version "
              f"{published.version}); its test accuracy: "
              f"{invoked_as('tuning.evaluate', 'python tuning/evaluate.py', like='tuning.search')} "
              f"{published.registered_uri} "
              f"--tracking-uri {plan.tracking_uri}", flush=True)
    diverged = int((report.trials.table["status"] == "diverged").sum()) if not report.trials.table.empty else 0
    if diverged:
        print(f"{diverged} of {len(states)} trials diverged (non-finite loss): failed, never a result", flush=True)
    if errors > diverged:
        print(f"{errors - diverged} of {len(states)} trials failed; see their error.txt under {plan.experiment_path}",
              flush=True)
    return 1 if errors == len(states) else 0
