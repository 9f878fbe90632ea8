"""A trial's life, the same for every backend and strategy: the config of its point, the
backend, the checkpoint it resumes from (with its MLflow run id), its MLflow run (a new
one with every param, or the same one continued), one report and one checkpoint per
epoch, and its end: finished, or diverged (marked so that a retry does not train)."""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spmi.config import TrainConfig, resolved
from spmi.trainer import Diverged
from tuning.plan.settings import TIME_ATTR
from tuning.record import mlflow_log
from tuning.trial.backend import BACKENDS, TrialBackend
from tuning.trial.diverged import TrialDiverged, mark_diverged
from tuning.trial.nodedata import node_tags
from tuning.trial.spec import Point, TrialSpec
from tuning.trial.strategy import Strategy

META_FILE = "trial.json"  # beside a checkpoint: the trial's MLflow run id and epochs done


@dataclass(frozen=True)
class TrialInfo:
    """Which Tune trial this is, and its folder (spool, divergence marker)."""

    id: str
    name: str
    folder: str


def run_trial(config: dict[str, Any], spec: TrialSpec, trial: TrialInfo, strategy: Strategy) -> None:
    """Run ``spec`` at Tune's ``config`` in this process (one rank with DDP)."""
    point = spec.point(config)
    cfg = strategy.place(point.config)
    backend = BACKENDS[spec.backend](cfg, spec, comm=strategy.comm, check_sync=strategy.check_sync)
    run_id = restore(backend, strategy.checkpoint())  # every rank loads it
    run = None
    if strategy.lead:
        run = open_trial_run(backend, point, spec, trial, run_id, spool=strategy.spool(trial.folder))
    monitor = None if run is None else mlflow_log.start_system_metrics(spec.tracking.uri, run.run_id,
                                                                       resume=not run.new)
    try:
        backend.fit(EpochReporter(run, backend, strategy))
    except Diverged as err:  # the reduced loss under DDP: every rank stops at the same epoch
        if run is not None:
            mark_diverged(trial.folder, err.epoch + 1, str(err))
            close_diverged(spec.tracking.uri, run, err)
        raise TrialDiverged(str(err)) from None
    finally:
        if monitor is not None:
            monitor.finish()
    # reached only when Tune asks past the last epoch; CloseTrialRuns closes the run otherwise
    if run is not None:
        mlflow_log.terminate(spec.tracking.uri, run.run_id, "FINISHED")


def restore(backend: TrialBackend, checkpoint: Any | None) -> str | None:
    """Load a (Tune or Train) checkpoint into ``backend``; the MLflow run id saved with it."""
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        backend.restore(Path(folder))
        return read_run_id(folder)


def read_run_id(folder: str | Path) -> str | None:
    path = Path(folder) / META_FILE
    return json.loads(path.read_text()).get("mlflow_run_id") if path.exists() else None


def write_meta(folder: str | Path, run_id: str | None, done: int) -> None:
    """The file beside a trial checkpoint that ``restore`` reads the MLflow run id from."""
    (Path(folder) / META_FILE).write_text(json.dumps({"mlflow_run_id": run_id, "epoch": done}))


def scalar_record(record: dict[str, Any]) -> dict[str, float | int]:
    """The numbers of an epoch's record, for Tune; ``epoch`` stays an int."""
    scalars: dict[str, float | int] = {k: float(v) for k, v in record.items()
                                       if isinstance(v, int | float) and not isinstance(v, bool)}
    scalars[TIME_ATTR] = int(record[TIME_ATTR])
    return scalars


class EpochReporter:
    """After each epoch: the record to MLflow (the lead), the checkpoint (with the
    backend's state and the run id) and the report, as the strategy does them."""

    def __init__(self, run: mlflow_log.TrialRun | None, backend: TrialBackend, strategy: Strategy):
        self.run, self.backend, self.strategy = run, backend, strategy

    def __call__(self, metrics: dict[str, Any]) -> None:
        record = self.backend.record(metrics)
        done = record[TIME_ATTR]
        if self.run is not None:
            self.run.log_epoch(record, step=done)
        scalars = scalar_record(record)
        with tempfile.TemporaryDirectory() as folder:
            self.backend.save(Path(folder), self.strategy.lead)
            if self.strategy.lead:
                write_meta(folder, self.run.run_id if self.run is not None else None, done)
            self.strategy.report(scalars, folder, done)


def open_trial_run(backend: TrialBackend, point: Point, spec: TrialSpec, trial: TrialInfo, run_id: str | None,
                   spool: Path | None = None) -> mlflow_log.TrialRun:
    """The trial's MLflow run: ``run_id`` (from the checkpoint) or the trial's run continued,
    else a new one with every param; a resumption is recorded as ``resumed_from_epoch``."""
    cfg, tracking = backend.cfg, spec.tracking
    uri = tracking.uri
    tags = {"role": tracking.role, "dataset": cfg.dataset, "method": cfg.method, "trial_name": trial.name,
            "search": tracking.search, "git_commit": tracking.git_commit, "data_checksum": backend.data_checksum,
            "searched": ",".join(point.searched), mlflow_log.PARENT_TAG: tracking.parent_run_id,
            **mlflow_log.standard_tags(tracking.git_commit), **point.tags}
    run = mlflow_log.TrialRun.open(uri, tracking.experiment_id, trial.id, trial.name, tags, run_id=run_id,
                                   spool=spool)
    if run.new:
        mlflow_log.log_params(uri, run.run_id, all_params(cfg))
        mlflow_log.log_dataset(uri, run.run_id, cfg.dataset, backend.data_checksum, cfg.data_root,
                               split_profile(cfg))
    mlflow_log.set_tags(uri, run.run_id, node_tags())  # where it (last) ran
    if backend.epoch > 0:
        run.log_metric("resumed_from_epoch", backend.epoch, step=backend.epoch)
        mlflow_log.set_tags(uri, run.run_id, {"resumed_from_epoch": backend.epoch})
    return run


def close_diverged(uri: str, run: mlflow_log.TrialRun, err: Diverged) -> None:
    """The diverged trial's MLflow run: FAILED, tagged ``diverged``, the epoch as a metric
    (the driver's CloseTrialRuns does the same should MLflow be unreachable now)."""
    try:
        run.flush()
        run.log_metric("diverged_at_epoch", err.epoch + 1, step=err.epoch + 1)
        mlflow_log.set_tags(uri, run.run_id, {mlflow_log.DIVERGED_TAG: "true", "diverged_reason": str(err)[:250]})
        mlflow_log.terminate(uri, run.run_id, "FAILED")
    except Exception as mlflow_err:  # the trial fails either way; never hide the divergence
        logging.getLogger(__name__).warning("could not mark run %s diverged: %s", run.run_id, mlflow_err)


def all_params(cfg: TrainConfig) -> dict[str, Any]:
    """Every config value of a run, method options with their defaults included."""
    cfg = resolved(cfg)
    fields = {k: v for k, v in cfg.to_dict().items() if k != "options"}
    return {**fields, **dataclasses.asdict(cfg.options)}


def split_profile(cfg: TrainConfig) -> dict[str, Any]:
    """What of the dataset a run trains on (the dataset input's profile)."""
    return {"labelled": cfg.labelled, "partial_rate": cfg.partial_rate, "val_size": cfg.val_size,
            "unlabelled_size": cfg.unlabelled_size, "include_labelled": cfg.include_labelled, "seed": cfg.seed,
            "val_labels": cfg.val_labels, "val_from_labelled": cfg.val_from_labelled}
