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

# the driver's settings that every node's trials need and that are no secrets (Ray stores a
# job's runtime environment and shows it through its dashboard and Jobs API): where MLflow
# and the object store are, how to reach them, and the Ray/Tune switches that change trials.
# Not the driver's fail-fast settings of its pre-flight checks (trials keep MLflow's retries).
NODE_ENV_NAMES = (
    "MLFLOW_TRACKING_URI", "MLFLOW_S3_ENDPOINT_URL", "MLFLOW_S3_IGNORE_TLS", "MLFLOW_TRACKING_INSECURE_TLS",
    "MLFLOW_TRACKING_SERVER_CERT_PATH", "MLFLOW_TRACKING_CLIENT_CERT_PATH", "MLFLOW_S3_UPLOAD_EXTRA_ARGS",
    "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_CA_BUNDLE",
    "RAY_CHDIR_TO_TRIAL_DIR", "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS",
)
# credentials: provisioned on the nodes (environment, files, instance roles, a Kubernetes
# Secret); forwarded only with --forward-secrets
SECRET_NAMES = (
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
    "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN",
)


def node_env(plan: SearchPlan, forward_secrets: bool = False) -> dict[str, str]:
    """``env_vars`` of the job's runtime environment: the driver's settings of NODE_ENV_NAMES
    (no secrets), and with ``forward_secrets`` its credentials of SECRET_NAMES too."""
    names = NODE_ENV_NAMES + (SECRET_NAMES if forward_secrets else ())
    env = {k: os.environ[k] for k in names if k in os.environ}
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


def runtime_env(plan: SearchPlan, forward_secrets: bool = False) -> dict[str, Any]:
    """The job's runtime environment on a cluster: the code (spmi/, tuning/) and ``node_env``.
    Inside a submitted job Ray merges it with the job's own and refuses a field or variable
    set twice: those the job sets are left to the job (its workers get them anyway)."""
    job = submitted_job_env()
    env: dict[str, Any] = {}
    if "py_modules" not in job:
        env["py_modules"] = [str(REPO_ROOT / "spmi"), str(REPO_ROOT / "tuning")]
    env_vars = {k: v for k, v in node_env(plan, forward_secrets).items() if k not in (job.get("env_vars") or {})}
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
