"""MLflow side of a search: the store, the experiment, the parent run of the search and
one run per trial that survives restores (its id travels in the trial's checkpoint)."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from spmi.atomic import write_atomic

T = TypeVar("T")
TRIAL_TAG = "trial_id"            # every trial run carries its Tune trial id
PARENT_TAG = "mlflow.parentRunId"
STATUS_TAG = "tune_status"       # set by the driver when Tune is done with a trial: TERMINATED or ERROR
TERMINAL = ("FINISHED", "FAILED", "KILLED")
DIVERGED_TAG = "diverged"        # "true" on the run of a trial whose loss became non-finite
SYSTEM_METRICS_TAG = "system_metrics_interval_s"  # a trial run's system/* sampling interval (s)
SYSTEM_METRICS_INTERVAL_S = 10.0
SPOOL_FILE = "mlflow_pending.jsonl"  # a trial's epochs MLflow did not take yet (outage), replayed later
log = logging.getLogger(__name__)


def default_uri(storage_path: str | Path) -> str:
    """The embedded store of a storage path: ``sqlite:///<abs>/mlflow.db``."""
    return "sqlite:///" + str(Path(storage_path).resolve() / "mlflow.db")


@contextlib.contextmanager
def _fast_requests(timeout: float) -> Iterator[None]:
    """MLflow HTTP requests without retries and with a short timeout, for this block only:
    the environment is restored after it, so neither the driver's later calls nor the trials
    (Ray workers inherit the driver's environment) lose MLflow's own retries."""
    names = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": str(int(timeout))}
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update(names)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def check_store(uri: str, timeout: float = 5.0, api_timeout: float = 30.0) -> None:
    """Fail fast (ValueError, one line) when the tracking store cannot be used: ``timeout``
    for a server's /health, ``api_timeout`` for its first API answer (a busy server's first
    query can take longer), no retries (an unreachable server is refused at once)."""
    with _fast_requests(api_timeout):
        _check_store(uri, timeout)


def check_search_records(uri: str, experiment_id: str, parent_run_id: str, name: str) -> None:
    """A resumed search's experiment and parent run must still be in the store (ValueError)."""
    def gone() -> ValueError:
        return ValueError(f"the MLflow store {uri} no longer holds search {name} (experiment {experiment_id}, "
                          f"run {parent_run_id}: deleted?); restore the store, or start a new search under "
                          f"another --name")
    c = client(uri)
    try:
        exp = c.get_experiment(experiment_id)
        run = c.get_run(parent_run_id)
    except Exception:  # MLflow raises RESOURCE_DOES_NOT_EXIST as MlflowException
        raise gone() from None
    if exp is None or exp.lifecycle_stage != "active" or run.info.lifecycle_stage != "active":
        raise gone()


def _check_store(uri: str, timeout: float) -> None:
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as reply:
                reply.read(64)
        except (urllib.error.URLError, OSError, ValueError) as err:
            reason = getattr(err, "reason", err)
            raise ValueError(f"MLflow tracking server {uri} is not reachable ({reason}); start it or "
                             f"leave out --tracking-uri to use the embedded SQLite store") from None
    elif uri.startswith("sqlite:///"):
        folder = Path(uri[len("sqlite:///"):]).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ValueError(f"cannot create the MLflow store folder {folder}: {err.strerror}") from None
    try:
        client(uri).search_experiments(max_results=1)
    except Exception as err:  # mlflow raises many types; the message is what matters
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"MLflow tracking store {uri} is not usable: {first}") from None


@contextlib.contextmanager
def using(uri: str) -> Iterator[None]:
    """MLflow's fluent API (``mlflow.start_run``, model logging and registration) on ``uri``
    for tracking and registry, restoring the process's previous URIs afterwards."""
    import mlflow
    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before[0])
        mlflow.set_registry_uri(before[1])


def client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient
    return MlflowClient(tracking_uri=uri, registry_uri=uri)  # never the process-wide registry


def retry(fn: Callable[[], T], tries: int = 5) -> T:
    """Call ``fn``, retrying a few times (SQLite ``database is locked`` under concurrent writers)."""
    for attempt in range(tries):
        try:
            return fn()
        except Exception as err:
            if attempt == tries - 1 or "locked" not in str(err).lower():
                raise
            time.sleep(0.2 * 2 ** attempt)
    raise AssertionError("unreachable")


def outage_retry(fn: Callable[[], T], what: str, budget_s: float = 900.0) -> T:
    """Call ``fn`` until it succeeds or ``budget_s`` seconds have passed (then re-raise):
    the driver's end-of-search steps outlast a tracking-server outage. MLflow's own retries
    run inside each call; this adds a slower loop around them."""
    deadline, wait = time.monotonic() + budget_s, 5.0
    while True:
        try:
            return fn()
        except Exception as err:
            if not transient(err) or time.monotonic() + wait > deadline:
                raise
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            print(f"[search] MLflow unavailable while {what} ({first}); retrying in {wait:.0f} s", flush=True)
            time.sleep(wait)
            wait = min(2 * wait, 60.0)


def ensure_experiment(uri: str, name: str, artifact_location: str | None = None) -> str:
    """The id of experiment ``name``, created when missing."""
    c = client(uri)
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    return c.create_experiment(name, artifact_location=artifact_location)


def start_parent(uri: str, experiment_id: str, name: str, tags: dict[str, str], params: dict[str, Any]) -> str:
    """Create the search's parent run; returns its id."""
    c = client(uri)
    run = c.create_run(experiment_id, run_name=f"search {name}", tags={**tags, "search": name, "role": "search"})
    log_params(uri, run.info.run_id, params)
    return run.info.run_id


def reopen(uri: str, run_id: str) -> None:
    """Mark a run RUNNING again (a resumed search or trial)."""
    retry(lambda: client(uri).update_run(run_id, status="RUNNING"))


def terminate(uri: str, run_id: str, status: str = "FINISHED") -> None:
    retry(lambda: client(uri).set_terminated(run_id, status))


def set_tags(uri: str, run_id: str, tags: dict[str, Any]) -> None:
    from mlflow.entities import RunTag
    items = [RunTag(k, str(v)) for k, v in tags.items()]
    retry(lambda: client(uri).log_batch(run_id, tags=items))


def log_params(uri: str, run_id: str, params: dict[str, Any]) -> None:
    """Log params (100 per batch, MLflow's limit); values as strings."""
    from mlflow.entities import Param
    items = [Param(k, str(v)) for k, v in sorted(params.items())]
    for i in range(0, len(items), 100):
        chunk = items[i:i + 100]
        retry(lambda chunk=chunk: client(uri).log_batch(run_id, params=chunk))


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Finite numbers of ``metrics``; a list ``x`` becomes ``x/0``, ``x/1``, ..."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        values = enumerate(value) if isinstance(value, list | tuple) else [(None, value)]
        for i, v in values:
            if isinstance(v, bool | int | float) and math.isfinite(float(v)):
                out[key if i is None else f"{key}/{i}"] = float(v)
    return out


def log_metrics(uri: str, run_id: str, metrics: dict[str, Any], step: int) -> None:
    from mlflow.entities import Metric
    now = int(time.time() * 1000)
    items = [Metric(k, v, now, step) for k, v in scalar_metrics(metrics).items()]
    retry(lambda: client(uri).log_batch(run_id, metrics=items))


def find_trial_run(uri: str, experiment_id: str, trial_id: str) -> Any | None:
    """The run of a Tune trial (by tag), or None."""
    runs = retry(lambda: client(uri).search_runs([experiment_id], f"tags.{TRIAL_TAG} = '{trial_id}'",
                                                 max_results=5))
    return runs[0] if runs else None


def is_complete(run: Any) -> bool:
    """Whether a driver closed this trial run as complete (``tuning.driver.callbacks.CloseTrialRuns``)."""
    return run.data.tags.get(STATUS_TAG) == "TERMINATED"


def completed_result(uri: str, experiment_id: str, trial_id: str) -> dict[str, float] | None:
    """The latest metrics of a trial whose run a driver already closed as complete, else None."""
    run = find_trial_run(uri, experiment_id, trial_id)
    return dict(run.data.metrics) if run is not None and is_complete(run) else None


TRANSIENT_WORDS = ("connection", "refused", "max retries", "timed out", "timeout", "temporarily", "unavailable",
                   "502", "503", "504", "locked", "reset by peer")


def transient(err: BaseException) -> bool:
    """Whether ``err`` looks like the tracking store being unreachable (worth retrying)
    rather than a mistake that a retry would only repeat."""
    text = f"{type(err).__name__} {err} {err.__cause__ or ''} {err.__context__ or ''}".lower()
    return isinstance(err, ConnectionError | TimeoutError) or any(w in text for w in TRANSIENT_WORDS)


def _read_spool(path: Path) -> list[dict[str, Any]]:
    rows = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            rows.append(json.loads(line))
        except ValueError:  # a line cut short by a kill
            continue
    return rows


def _write_spool(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        path.unlink(missing_ok=True)
        return
    text = "".join(json.dumps(r) + "\n" for r in rows)
    write_atomic(path, lambda f: f.write(text), "w")


def replay_spool(uri: str, path: str | Path) -> int:
    """Log the epochs a trial kept in ``path`` during an outage (in order, each to the run
    it names); the file is removed once all are in. Returns how many were sent; raises
    when MLflow still fails."""
    path = Path(path)
    rows = _read_spool(path)
    for i, row in enumerate(rows):
        try:
            log_metrics(uri, row["run_id"], row["metrics"], row["step"])
        except Exception:
            _write_spool(path, rows[i:])
            raise
    path.unlink(missing_ok=True)
    return len(rows)


class TrialRun:
    """One trial's MLflow run. Reopened (not duplicated) when the trial is resumed or
    restarted; epochs already logged are not logged again. An epoch that MLflow does not
    take (after its own retries: an outage) is kept in memory and in ``spool`` (a file in
    the trial's folder) and sent before the next one; a restarted trial or the driver
    replays a spool a dead trial left."""

    def __init__(self, uri: str, run_id: str, new: bool, logged_steps: Iterable[int] = (),
                 spool: str | Path | None = None):
        self.uri, self.run_id, self.new = uri, run_id, new
        self.logged = set(logged_steps)
        self.spool = Path(spool) if spool is not None else None
        kept = _read_spool(self.spool) if self.spool is not None else []
        self.pending: list[dict[str, Any]] = [row for row in kept if row.get("run_id") == run_id]

    @classmethod
    def open(cls, uri: str, experiment_id: str, trial_id: str, run_name: str, tags: dict[str, Any],
             run_id: str | None = None, spool: str | Path | None = None) -> TrialRun:
        """Continue ``run_id`` (from the checkpoint) or the trial's run found by tag, else create one."""
        c = client(uri)
        if run_id is None:
            found = find_trial_run(uri, experiment_id, trial_id)
            run_id = found.info.run_id if found is not None else None
        if run_id is not None:
            reopen(uri, run_id)
            steps = [m.step for m in retry(lambda: c.get_metric_history(run_id, "epoch"))]
            run = cls(uri, run_id, new=False, logged_steps=steps, spool=spool)
            run.flush()
            return run
        all_tags = {TRIAL_TAG: trial_id, **{k: str(v) for k, v in tags.items()}}
        created = retry(lambda: c.create_run(experiment_id, run_name=run_name, tags=all_tags))
        return cls(uri, created.info.run_id, new=True, spool=spool)

    def log_epoch(self, metrics: dict[str, Any], step: int) -> bool:
        """Log one epoch (after any kept ones); False when MLflow is unreachable (kept)."""
        if step not in self.logged and all(row["step"] != step for row in self.pending):
            self.pending.append({"run_id": self.run_id, "step": step, "metrics": scalar_metrics(metrics)})
        return self.flush()

    def flush(self) -> bool:
        """Send the kept epochs in order; True when none is left."""
        sent = 0
        try:
            for row in self.pending:
                if row["step"] not in self.logged:
                    log_metrics(self.uri, self.run_id, row["metrics"], row["step"])
                    self.logged.add(row["step"])
                sent += 1
        except Exception as err:
            log.warning("MLflow did not take epoch %s of run %s (%s); kept, sent with the next epoch",
                        self.pending[sent]["step"], self.run_id, str(err).splitlines()[0][:200] if str(err) else err)
        self.pending = self.pending[sent:]
        if self.spool is not None and (sent or self.pending):
            _write_spool(self.spool, self.pending)
        return not self.pending

    def log_metric(self, key: str, value: float, step: int) -> None:
        log_metrics(self.uri, self.run_id, {key: value}, step)


def finalize_runs(uri: str, experiment_id: str, parent_run_id: str, status_of: dict[str, str]) -> int:
    """Give every still-RUNNING trial run of the experiment a terminal status: FINISHED for
    trials Tune terminated, FAILED for errored ones, KILLED for unknown trials. Returns the
    number changed."""
    c = client(uri)
    runs = retry(lambda: c.search_runs([experiment_id], "attributes.status = 'RUNNING'", max_results=10000))
    changed = 0
    for run in runs:
        if run.info.run_id == parent_run_id:
            continue
        tune_status = status_of.get(run.data.tags.get(TRIAL_TAG, ""))
        if tune_status in (None, "TERMINATED", "ERROR"):
            terminate(uri, run.info.run_id, {"TERMINATED": "FINISHED", "ERROR": "FAILED"}.get(tune_status, "KILLED"))
            changed += 1
    return changed


def standard_tags(git_commit: str) -> dict[str, str]:
    """Tags MLflow's UI shows by default: the source commit (``-dirty`` stays in ``git_commit``)."""
    tags = {"mlflow.source.name": "tuning/search.py", "mlflow.source.type": "LOCAL"}
    if git_commit and git_commit != "unknown":
        tags["mlflow.source.git.commit"] = git_commit.removesuffix("-dirty")
    return tags


def log_dataset(uri: str, run_id: str, name: str, digest: str, source: str, profile: dict[str, Any],
                context: str = "training") -> None:
    """The dataset as a logged input of the run, its checksum as the digest."""
    import json

    from mlflow.entities import Dataset, DatasetInput, InputTag
    dataset = Dataset(name=name, digest=digest, source_type="local", source=json.dumps({"uri": source}),
                      profile=json.dumps(profile, sort_keys=True))
    item = DatasetInput(dataset, tags=[InputTag("mlflow.data.context", context)])
    retry(lambda: client(uri).log_inputs(run_id, datasets=[item]))


def system_metrics_monitor(uri: str, run_id: str, resume: bool,
                           interval: float = SYSTEM_METRICS_INTERVAL_S) -> Any | None:
    """MLflow's system-metrics monitor (CPU, memory, disk, network; GPU with pynvml) for the
    run, not started: each sample goes in as ``system/*`` at the next step (after the run's
    last one when ``resume``). ``MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL`` overrides
    ``interval``. None where unavailable (no psutil)."""
    try:
        import psutil  # noqa: F401  (the monitor needs it)
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
        return SystemMetricsMonitor(run_id, sampling_interval=interval, resume_logging=resume, tracking_uri=uri)
    except Exception:  # no psutil, or the monitor cannot be built: training goes on without it
        return None


def start_system_metrics(uri: str, run_id: str, resume: bool,
                         interval: float = SYSTEM_METRICS_INTERVAL_S) -> Any | None:
    """The run's system-metrics monitor, started: it logs a sample every interval until
    ``finish()`` (a run shorter than one interval has none). The run is tagged with the
    interval (:data:`SYSTEM_METRICS_TAG`). None where unavailable."""
    monitor = system_metrics_monitor(uri, run_id, resume, interval)
    if monitor is None:
        return None
    set_tags(uri, run_id, {SYSTEM_METRICS_TAG: f"{float(monitor.sampling_interval):g}"})
    monitor.start()
    return monitor


def update_parent_best(uri: str, parent_run_id: str, trial_id: str, result: dict[str, Any], step: int) -> bool:
    """Put a finished trial's best epoch (``best/val_acc``, ``best/test_acc``, ``best/epoch``
    in ``result``) on the parent run when it beats the parent's ``best/val_acc``, with the
    tag ``best/trial``; whether it did."""
    val = result.get("best/val_acc")
    if val is None or not math.isfinite(float(val)):
        return False
    current = retry(lambda: client(uri).get_run(parent_run_id)).data.metrics.get("best/val_acc")
    if current is not None and float(val) <= current:
        return False
    log_metrics(uri, parent_run_id, {k: result[k] for k in ("best/val_acc", "best/test_acc", "best/epoch")
                                     if k in result}, step=step)
    set_tags(uri, parent_run_id, {"best/trial": trial_id})
    return True
