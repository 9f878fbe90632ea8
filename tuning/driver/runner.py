"""The Ray part of a search: start or join a cluster, build (or restore) the Tuner with
Optuna TPE, a concurrency limit and ASHA, run it, close the MLflow runs, write the report."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import ConcurrencyLimiter

from tuning.driver import cost_watch
from tuning.driver.callbacks import CloseTrialRuns, ReleaseTrainGroups
from tuning.driver.searcher import AshaOptunaSearch
from tuning.plan import cost
from tuning.plan.search_plan import SearchPlan
from tuning.plan.settings import DRIVER_CPU, DRIVER_HEADROOM_CPUS, REPO_ROOT, TIME_ATTR, TRAIN_RUNS_DIR
from tuning.record import mlflow_log, optuna_study
from tuning.trial.trainable import train_trial

# the environment every node's trials need: MLflow (tracking URI, S3 endpoint of artifacts,
# credentials) and the object store (AWS_* credentials, region, endpoint), plus the few
# Ray/Tune settings of the driver that change trial behaviour
NODE_ENV_PREFIXES = ("MLFLOW_", "AWS_")
NODE_ENV_NAMES = ("RAY_CHDIR_TO_TRIAL_DIR", "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS")
# the driver's own fail-fast settings of its pre-flight checks: trials keep MLflow's retries
NODE_ENV_EXCLUDED = ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")


def node_env(plan: SearchPlan) -> dict[str, str]:
    """``env_vars`` of the job's runtime environment: what trials on any node need."""
    env = {k: v for k, v in os.environ.items()
           if (k.startswith(NODE_ENV_PREFIXES) or k in NODE_ENV_NAMES) and k not in NODE_ENV_EXCLUDED}
    env["MLFLOW_TRACKING_URI"] = plan.tracking_uri
    if plan.storage_endpoint and plan.storage.scheme == "s3":
        env.setdefault("MLFLOW_S3_ENDPOINT_URL", plan.storage_endpoint)
    return env


def submitted_job_env() -> dict[str, Any]:
    """The runtime environment of the Ray job this driver runs in (``ray job submit``), else {}."""
    try:
        return dict(json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR") or "{}").get("runtime_env") or {})
    except (ValueError, AttributeError):
        return {}


def runtime_env(plan: SearchPlan) -> dict[str, Any]:
    """The job's runtime environment on a cluster: the code (spmi/, tuning/) and ``node_env``.
    Inside a submitted job Ray merges it with the job's own and refuses a field or variable
    set twice: those the job sets are left to the job (its workers get them anyway)."""
    job = submitted_job_env()
    env: dict[str, Any] = {}
    if "py_modules" not in job:
        env["py_modules"] = [str(REPO_ROOT / "spmi"), str(REPO_ROOT / "tuning")]
    env_vars = {k: v for k, v in node_env(plan).items() if k not in (job.get("env_vars") or {})}
    if env_vars:
        env["env_vars"] = env_vars
    return env


def start_ray(address: str | None, workers_per_trial: int = 1, env: dict[str, Any] | None = None) -> None:
    """Join ``address`` (with the runtime environment ``env``) or start a local Ray; with
    DDP trials the local Ray gets DRIVER_HEADROOM_CPUS logical CPUs more than the cores,
    for the idle trial drivers."""
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
    if address:  # a cluster gets the code and the settings shipped with the job
        ray.init(address=address, runtime_env=env)
        return
    import torch
    headroom = DRIVER_HEADROOM_CPUS if workers_per_trial > 1 else 0
    ray.init(address="local", num_cpus=(os.cpu_count() or 1) + headroom,
             num_gpus=torch.cuda.device_count() if torch.cuda.is_available() else 0,
             include_dashboard=False, object_store_memory=256 * 1024**2)


def trial_need(plan: SearchPlan) -> tuple[float, float]:
    """(CPUs, GPUs) one trial holds: its own, or N workers' plus the driver's CPU share."""
    n = plan.workers_per_trial
    if n > 1:
        return n * plan.cpus_per_trial + DRIVER_CPU, n * plan.gpus_per_trial
    return float(plan.cpus_per_trial), plan.gpus_per_trial


def check_cluster(plan: SearchPlan) -> None:
    """Trials that could never be placed are an error now, not trials pending forever."""
    have = ray.cluster_resources()
    gpus, cpus = have.get("GPU", 0.0), have.get("CPU", 0.0)
    need_cpu, need_gpu = trial_need(plan)
    each = f" ({plan.workers_per_trial} workers)" if plan.workers_per_trial > 1 else ""
    if need_gpu > gpus:
        raise ValueError(f"each trial{each} asks for {need_gpu:g} GPU(s), but the Ray cluster has "
                         f"{gpus:g}; use --gpus-per-trial 0")
    if need_cpu > cpus + 1e-9:
        raise ValueError(f"each trial{each} asks for {need_cpu:g} CPUs, but the Ray cluster has {cpus:g}")
    if plan.max_concurrent is None:
        fit = cpus / need_cpu
        if need_gpu > 0:
            fit = min(fit, gpus / need_gpu)
        plan.max_concurrent = max(1, int(fit + 1e-9))
        plan.save()


def trainable(plan: SearchPlan) -> Any:
    """The trial function with the search's constants bound (same on restore)."""
    meta = {"tracking_uri": plan.tracking_uri, "experiment_id": plan.experiment_id,
            "parent_run_id": plan.parent_run_id, "search": plan.name, "git_commit": plan.git_commit,
            "cpus": plan.cpus_per_trial, "data_checksum": plan.data_checksum}
    if plan.workers_per_trial > 1:  # the trial drives a Ray Train run whose workers hold the resources
        from tuning.trial.ddp import train_trial_ddp
        meta |= {"workers": plan.workers_per_trial, "gpus": plan.gpus_per_trial, "check_sync": plan.check_sync,
                 "storage": [plan.storage_path, plan.storage_endpoint],
                 "train_storage": [plan.name, TRAIN_RUNS_DIR]}
        bound = tune.with_parameters(train_trial_ddp, base=plan.base, meta=meta)
        return tune.with_resources(bound, {"cpu": DRIVER_CPU})
    bound = tune.with_parameters(train_trial, base=plan.base, meta=meta)
    return tune.with_resources(bound, {"cpu": plan.cpus_per_trial, "gpu": plan.gpus_per_trial})


def trial_dirname(trial: Any) -> str:
    return f"trial_{trial.trial_id}"


def make_searcher(plan: SearchPlan, space: Any) -> AshaOptunaSearch:
    """TPE with the plan's explicit settings on the search's persistent study."""
    tpe = plan.tpe or optuna_study.tpe_settings(plan.num_samples, plan.max_concurrent, plan.seed)
    return AshaOptunaSearch(space=space.to_optuna, metric=plan.metric, mode=plan.mode,
                            storage_url=plan.optuna_storage, study_name=plan.name,
                            sampler=optuna_study.make_sampler(tpe), max_epochs=plan.max_epochs,
                            points_to_evaluate=space.points_to_evaluate())


def build_tuner(plan: SearchPlan) -> tune.Tuner:
    space = plan.space()
    searcher = make_searcher(plan, space)
    scheduler = ASHAScheduler(time_attr=TIME_ATTR, max_t=plan.max_epochs, grace_period=plan.grace_period,
                              reduction_factor=plan.reduction_factor)
    storage_path, storage_fs = plan.storage.ray_location()
    return tune.Tuner(
        trainable(plan),
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
                                      parent_run_id=plan.parent_run_id, scheme=plan.storage.scheme),
                       cost_watch.CostWatch(plan.tracking_uri, plan.parent_run_id, plan.num_samples,
                                            plan.max_concurrent or 1, asha_of(plan))]
            + ([ReleaseTrainGroups()] if plan.workers_per_trial > 1 else [])))


def asha_of(plan: SearchPlan) -> cost.Asha:
    return cost.Asha(plan.max_epochs, plan.grace_period, plan.reduction_factor)


def reporter(plan: SearchPlan, space: Any) -> tune.CLIReporter:
    """A compact status table: searched values, epoch and accuracies (needs RAY_AIR_NEW_OUTPUT=0)."""
    return tune.CLIReporter(parameter_columns=list(space.params), max_report_frequency=30,
                            metric_columns={TIME_ATTR: "epoch", plan.metric: "val/acc", "test/acc": "test/acc"},
                            sort_by_metric=True)


def trial_states(plan: SearchPlan) -> dict[str, str]:
    """Tune status of every trial of the search, from the saved experiment state."""
    path, fs = plan.storage.ray_location(plan.name)
    analysis = tune.ExperimentAnalysis(path, storage_filesystem=fs)
    return {t.trial_id: t.status for t in analysis.trials}


def run_search(plan: SearchPlan, resumed: bool, address: str | None, time_budget: float | None = None) -> int:
    cost_watch.set_budget(time_budget)
    start_ray(address, plan.workers_per_trial, runtime_env(plan))
    # after ray.init (which installs its own): a job manager's SIGTERM takes Tune's graceful
    # SIGINT path, so the state is saved and the search can be resumed
    signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
    try:
        try:
            check_cluster(plan)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            mlflow_log.terminate(plan.tracking_uri, plan.parent_run_id, "FAILED")
            return 2
        path, fs = plan.storage.ray_location(plan.name)
        if resumed:
            mlflow_log.reopen(plan.tracking_uri, plan.parent_run_id)
        if resumed and tune.Tuner.can_restore(path, storage_filesystem=fs):
            print(f"resuming {plan.experiment_path}", flush=True)
            tuner = tune.Tuner.restore(path, trainable=trainable(plan), resume_unfinished=True, resume_errored=True,
                                       storage_filesystem=fs)
        else:
            tuner = build_tuner(plan)
        try:
            tuner.fit()
        except Exception:
            mlflow_log.terminate(plan.tracking_uri, plan.parent_run_id, "FAILED")
            raise
        states = trial_states(plan)
    finally:
        ray.shutdown()
    return finish(plan, states)


def finished(states: dict[str, str]) -> int:
    """How many of the trials (trial id -> Ray Tune status) have ended."""
    return sum(s in ("TERMINATED", "ERROR") for s in states.values())


def interrupted(what: str, done: int, total: int, unit: str, command: str) -> int:
    """Print that ``what`` (search, confirmation, table) stopped with runs left and the
    command (``python`` + ``command``) that continues it; the exit status 130."""
    print(f"{what} interrupted ({done}/{total} {unit} done); continue it with:\n  python {command}", flush=True)
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
                           f"tuning/search.py --dataset {plan.dataset} --method {plan.method} --storage-path "
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
        print(f"best model (epoch {published['epoch']}): {published['registered_uri']} (version "
              f"{published['version']}); its test accuracy: python tuning/evaluate.py {published['registered_uri']} "
              f"--tracking-uri {plan.tracking_uri}", flush=True)
    diverged = int((report.trials.table["status"] == "diverged").sum()) if not report.trials.table.empty else 0
    if diverged:
        print(f"{diverged} of {len(states)} trials diverged (non-finite loss): failed, never a result", flush=True)
    if errors > diverged:
        print(f"{errors - diverged} of {len(states)} trials failed; see their error.txt under {plan.experiment_path}",
              flush=True)
    return 1 if errors == len(states) else 0
