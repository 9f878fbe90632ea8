"""The Tune function trainable: one ``spmi`` Trainer per trial.

Each epoch it logs the metrics to the trial's MLflow run, saves the trainer's full state
with the run id into a Tune checkpoint and reports ``epoch`` (epochs completed) and the
scalar metrics. A restored trial loads its checkpoint and continues the same MLflow run.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import torch
from ray import tune
from ray.tune import Checkpoint

from spmi.config import TrainConfig, config_from_flat, resolve, resolved
from spmi.trainer import Diverged, Trainer
from tuning.plan.settings import TIME_ATTR
from tuning.record import mlflow_log
from tuning.trial.best import BestEpoch, BestTestSchedule
from tuning.trial.nodedata import node_dataset, node_tags

CHECKPOINT_FILE, META_FILE = "checkpoint.pt", "trial.json"
DIVERGED_FILE = "diverged.json"  # in the trial's folder: the trial diverged (read by retries and the report)


class TrialDiverged(RuntimeError):
    """Raised by a trial whose loss became non-finite: Tune ends it as ERROR (Optuna: FAIL),
    its MLflow run is FAILED with the ``diverged`` tag, and a retry of it does not train."""


def diverged_record(trial_dir: str | Path) -> dict[str, Any] | None:
    """What ``mark_diverged`` wrote in the trial's folder, or None."""
    path = Path(trial_dir) / DIVERGED_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def mark_diverged(trial_dir: str | Path, err: Diverged) -> None:
    Path(trial_dir).mkdir(parents=True, exist_ok=True)
    (Path(trial_dir) / DIVERGED_FILE).write_text(json.dumps({"epoch": err.epoch + 1, "message": str(err)}))


def trial_config(config: dict[str, Any], base: dict[str, Any]) -> TrainConfig:
    """The TrainConfig of a trial: its searched values over the search's (flat) base config,
    resolved and checked once."""
    return resolve(config, config_from_flat(base))


def all_params(cfg: TrainConfig) -> dict[str, Any]:
    """Every config value of a run, method options with their defaults included."""
    cfg = resolved(cfg)
    fields = {k: v for k, v in cfg.to_dict().items() if k != "options"}
    return {**fields, **dataclasses.asdict(cfg.options)}


def train_trial(config: dict[str, Any], base: dict[str, Any], meta: dict[str, Any]) -> None:
    """``config``: the searched values; ``base``: the search's flat config; ``meta``: MLflow
    ids, search name, commit, CPUs, optionally the run's ``role``, extra ``tags`` and ASHA's
    rung epochs ``test_epochs`` (see ``tuning.best.BestTestSchedule``; all bound with
    ``tune.with_parameters``)."""
    logging.getLogger("ray.train").setLevel(logging.WARNING)  # no line per checkpoint
    ctx = tune.get_context()
    trial_dir = persistent_trial_dir(ctx)
    before = diverged_record(trial_dir)
    if before is not None:  # Tune retries a failed trial: a diverged one must not train again
        raise TrialDiverged(before["message"])
    if report_if_completed(meta, ctx.get_trial_id()):
        return
    torch.set_num_threads(max(1, int(meta["cpus"])))
    cfg = trial_config(config, base)
    node = node_dataset(cfg, meta.get("data_checksum", ""), of=meta.get("data_checksum_of", "files"))
    trainer = Trainer(cfg, node.data)
    run_id, best = _restore(trainer)
    run = open_trial_run(trainer, config, meta, ctx.get_trial_id(), ctx.get_trial_name(), run_id,
                         spool=Path(trial_dir) / mlflow_log.SPOOL_FILE, data_checksum=node.checksum)
    trainer.callbacks.append(_Reporter(run, best, BestTestSchedule.of(meta, cfg.epochs, trainer.epoch)))
    monitor = mlflow_log.start_system_metrics(meta["tracking_uri"], run.run_id, resume=not run.new)
    try:
        trainer.fit()
    except Diverged as err:
        mark_diverged(trial_dir, err)
        close_diverged(meta["tracking_uri"], run, err)
        raise TrialDiverged(str(err)) from None
    finally:
        if monitor is not None:
            monitor.finish()
    # reached only when Tune asks past the last epoch; CloseTrialRuns closes the run otherwise
    mlflow_log.terminate(meta["tracking_uri"], run.run_id, "FINISHED")


def persistent_trial_dir(ctx: Any) -> Path:
    """The trial's folder under the search's storage path (it outlives the Ray session, so a
    resumed search sees what an earlier one wrote); Ray's working folder when that storage is
    not a local folder."""
    try:
        from ray.train._internal.session import get_storage
        path = Path(get_storage().trial_fs_path)
        if path.is_dir():
            return path
    except Exception:  # another Ray version or a remote storage filesystem
        pass
    return Path(ctx.get_trial_dir())


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


def report_if_completed(meta: dict[str, Any], trial_id: str) -> bool:
    """A resumed search may restart a trial that the killed driver had already seen
    complete (ASHA stopped it, or it reached the last epoch) before its experiment snapshot
    recorded that. Such a trial must not train on: report its final result again (so Tune,
    ASHA and the searcher see it) and tell the caller to return."""
    done = mlflow_log.completed_result(meta["tracking_uri"], meta["experiment_id"], trial_id)
    if done is None:
        return False
    done[TIME_ATTR] = int(done.get(TIME_ATTR, 0))
    tune.report(done)
    return True


def open_trial_run(trainer: Trainer, config: dict[str, Any], meta: dict[str, Any], trial_id: str,
                   trial_name: str, run_id: str | None, spool: Path | None = None,
                   data_checksum: str = "") -> mlflow_log.TrialRun:
    """The trial's MLflow run: ``run_id`` (from the checkpoint) or the trial's run continued,
    else a new one with every param; a resumption is recorded as ``resumed_from_epoch``.
    ``data_checksum``: the dataset's on this node (``tuning.nodedata``; default: the
    trainer's data's)."""
    cfg, uri = trainer.cfg, meta["tracking_uri"]
    data_checksum = data_checksum or trainer.data.checksum
    tags = {"role": meta.get("role", "trial"), "dataset": cfg.dataset, "method": cfg.method, "trial_name": trial_name,
            "search": meta["search"], "git_commit": meta["git_commit"], "data_checksum": data_checksum,
            "searched": ",".join(config), mlflow_log.PARENT_TAG: meta["parent_run_id"],
            **mlflow_log.standard_tags(meta["git_commit"]), **meta.get("tags", {})}
    run = mlflow_log.TrialRun.open(uri, meta["experiment_id"], trial_id, trial_name, tags, run_id=run_id, spool=spool)
    if run.new:
        mlflow_log.log_params(uri, run.run_id, all_params(cfg))
        mlflow_log.log_dataset(uri, run.run_id, cfg.dataset, data_checksum, cfg.data_root, split_profile(cfg))
    mlflow_log.set_tags(uri, run.run_id, node_tags())  # where it (last) ran
    if trainer.epoch > 0:
        run.log_metric("resumed_from_epoch", trainer.epoch, step=trainer.epoch)
        mlflow_log.set_tags(uri, run.run_id, {"resumed_from_epoch": trainer.epoch})
    return run


def split_profile(cfg: TrainConfig) -> dict[str, Any]:
    """What of the dataset a run trains on (the dataset input's profile)."""
    return {"labelled": cfg.labelled, "partial_rate": cfg.partial_rate, "val_size": cfg.val_size,
            "unlabelled_size": cfg.unlabelled_size, "include_labelled": cfg.include_labelled, "seed": cfg.seed}


def _restore(trainer: Trainer) -> tuple[str | None, BestEpoch]:
    """Load the trial's Tune checkpoint, if any; the MLflow run id and best epoch saved with it."""
    return load_checkpoint(trainer, tune.get_checkpoint())


def load_checkpoint(trainer: Trainer, checkpoint: Any) -> tuple[str | None, BestEpoch]:
    """Load a (Tune or Train) checkpoint into ``trainer``; the MLflow run id and the best
    epoch saved with it."""
    if checkpoint is None:
        return None, BestEpoch()
    with checkpoint.as_directory() as folder:
        trainer.load(Path(folder) / CHECKPOINT_FILE)
        meta_path = Path(folder) / META_FILE
        run_id = json.loads(meta_path.read_text()).get("mlflow_run_id") if meta_path.exists() else None
        return run_id, BestEpoch.load(folder)


def write_meta(folder: str | Path, run_id: str | None, done: int) -> None:
    """The file beside a trial checkpoint that ``load_checkpoint`` reads the MLflow run id from."""
    (Path(folder) / META_FILE).write_text(json.dumps({"mlflow_run_id": run_id, "epoch": done}))


def epoch_record(metrics: dict[str, Any]) -> dict[str, Any]:
    """A trainer epoch's metrics as logged and reported: ``epoch`` = epochs completed (1-based)."""
    return {**metrics, TIME_ATTR: int(metrics["epoch"]) + 1}


def scalar_record(record: dict[str, Any]) -> dict[str, float | int]:
    """The numbers of an ``epoch_record``, for Tune; ``epoch`` stays an int."""
    scalars: dict[str, float | int] = {k: float(v) for k, v in record.items()
                                       if isinstance(v, int | float) and not isinstance(v, bool)}
    scalars[TIME_ATTR] = int(record[TIME_ATTR])
    return scalars


class _Reporter:
    """Trainer callback: MLflow metrics, checkpoint (with the best epoch's weights) and
    ``tune.report`` after each epoch; the best weights' test accuracy at ``test_at``'s epochs
    (default: the last one only)."""

    def __init__(self, run: mlflow_log.TrialRun, best: BestEpoch, test_at: BestTestSchedule | None = None):
        self.run, self.best, self.test_at = run, best, test_at

    def __call__(self, metrics: dict[str, Any], trainer: Trainer) -> None:
        record = epoch_record(metrics)
        test_at = self.test_at or BestTestSchedule((), trainer.cfg.epochs)
        record = self.best.take(record, trainer, test_at.due(record[TIME_ATTR]))
        done = record[TIME_ATTR]
        self.run.log_epoch(record, step=done)
        scalars = scalar_record(record)
        with tempfile.TemporaryDirectory() as folder:
            trainer.save(Path(folder) / CHECKPOINT_FILE)
            self.best.save(folder)
            write_meta(folder, self.run.run_id, done)
            tune.report(scalars, checkpoint=Checkpoint.from_directory(folder))
