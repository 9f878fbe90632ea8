"""Ray itself for a driver: the runtime environment trials on any node need, starting or
joining a cluster, and whether a trial fits in it."""

from __future__ import annotations

import json
import os
from typing import Any

import ray
from ray import tune

from tuning.plan.search_plan import SearchPlan
from tuning.plan.settings import DRIVER_CPU, DRIVER_HEADROOM_CPUS, REPO_ROOT
from tuning.record.storage import Storage
from tuning.trial.spec import Resources

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


def trial_need(res: Resources) -> tuple[float, float]:
    """(CPUs, GPUs) one trial holds: its own, or N workers' plus the driver's CPU share."""
    if res.workers > 1:
        return res.workers * res.cpus + DRIVER_CPU, res.workers * res.gpus
    return float(res.cpus), res.gpus


def check_cluster(res: Resources) -> int:
    """Trials that could never be placed are an error now (ValueError), not trials pending
    forever; how many trials fit at once."""
    have = ray.cluster_resources()
    gpus, cpus = have.get("GPU", 0.0), have.get("CPU", 0.0)
    need_cpu, need_gpu = trial_need(res)
    each = f" ({res.workers} workers)" if res.workers > 1 else ""
    if need_gpu > gpus:
        raise ValueError(f"each trial{each} asks for {need_gpu:g} GPU(s), but the Ray cluster has "
                         f"{gpus:g}; use --gpus-per-trial 0")
    if need_cpu > cpus + 1e-9:
        raise ValueError(f"each trial{each} asks for {need_cpu:g} CPUs, but the Ray cluster has {cpus:g}")
    fit = cpus / need_cpu
    if need_gpu > 0:
        fit = min(fit, gpus / need_gpu)
    return max(1, int(fit + 1e-9))


def trial_states(storage: Storage, name: str) -> dict[str, str]:
    """Tune status of every trial of the run ``name`` in ``storage``, from its saved experiment state."""
    path, fs = storage.ray_location(name)
    analysis = tune.ExperimentAnalysis(path, storage_filesystem=fs)
    return {t.trial_id: t.status for t in analysis.trials}
