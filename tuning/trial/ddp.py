"""DDP trials (``--workers-per-trial N`` > 1): the Tune function trainable runs a Ray Train
``TorchTrainer`` of N workers (gloo on CPUs, NCCL on GPUs) and forwards rank 0's reports
to Tune with ``TuneReportCallback``.

Every worker builds ``DistComm`` over the process group Ray Train initialised and a
Trainer with it. Each epoch every rank saves (collective; rank 0 writes) and reports;
rank 0 attaches the checkpoint, with the MLflow run id, and logs to MLflow. A re-run
trial (restored search, retried failure) starts a TorchTrainer of the same name
``train-<trial_id>``, which restores its latest checkpoint on every rank.

Tune ends a stopped trial (ASHA, or at max_t) by killing its actor, so the Train run
never shuts down and its workers' placement group would stay reserved until the search
ends where ``ray[default]`` is missing (Ray Train's own cleaner needs its State API, and
is then left out). Rank 0 therefore reports the group's id (``PG_KEY``) and
``callbacks.ReleaseTrainGroups`` removes it when Tune is done with the trial (with
``ray[default]`` Ray's cleaner does so too; removing a removed group is a no-op).
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from pathlib import Path
from typing import Any

import ray.train
import torch
from ray import tune
from ray.train import Checkpoint, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback

from spmi.distributed import DistComm, assert_in_sync
from spmi.trainer import Diverged, Trainer
from tuning.plan.settings import TIME_ATTR
from tuning.record import mlflow_log
from tuning.record.storage import Storage
from tuning.trial.best import BestEpoch, BestTestSchedule
from tuning.trial.nodedata import node_dataset
from tuning.trial.trainable import (
    CHECKPOINT_FILE,
    TrialDiverged,
    close_diverged,
    diverged_record,
    epoch_record,
    load_checkpoint,
    mark_diverged,
    open_trial_run,
    persistent_trial_dir,
    report_if_completed,
    scalar_record,
    trial_config,
    write_meta,
)

CHECKPOINT_DIR = "epoch_{:04d}"  # a Train checkpoint's folder, by epochs completed
PG_KEY = "train_placement_group"  # result key: hex id of the trial's worker placement group


class _TorchTrainer(TorchTrainer):
    """TorchTrainer without Ray Train's placement-group cleaner actor: without the State
    API (``ray[default]``) it can never see its controller die, and then polls (and warns)
    forever. Used only where ``ray[default]`` is missing (see ``trainer_class``)."""

    def _create_default_callbacks(self) -> list:
        return [cb for cb in super()._create_default_callbacks()
                if type(cb).__name__ != "PlacementGroupCleanerCallback"]


def has_ray_default() -> bool:
    """Whether this node has ``ray[default]`` (the dashboard's dependencies, which the State
    API behind Ray Train's placement-group cleaner needs): Ray's own test for it."""
    try:
        import ray.dashboard.optional_deps  # noqa: F401
    except ImportError:
        return False
    return True


def trainer_class() -> type[TorchTrainer]:
    """Ray's TorchTrainer, with its own clean-up of Train placement groups, where
    ``ray[default]`` is installed (any real cluster); else the override without it."""
    return TorchTrainer if has_ray_default() else _TorchTrainer


def release_placement_group(pg_hex: str | None) -> bool:
    """Remove the placement group ``pg_hex`` unless already gone; whether it removed one."""
    if not pg_hex:
        return False
    from ray.util.placement_group import PlacementGroup, placement_group_table, remove_placement_group
    pg = PlacementGroup(ray.PlacementGroupID(bytes.fromhex(pg_hex)))
    if placement_group_table(pg).get("state", "REMOVED") == "REMOVED":
        return False
    remove_placement_group(pg)
    return True


def train_trial_ddp(config: dict[str, Any], base: dict[str, Any], meta: dict[str, Any]) -> None:
    """Tune trainable: one TorchTrainer run per trial. ``meta`` as for ``train_trial``, plus
    ``workers``, ``gpus`` (per worker), ``train_storage`` and ``check_sync``."""
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    ctx = tune.get_context()
    trial_id = ctx.get_trial_id()
    trial_dir = persistent_trial_dir(ctx)
    before = diverged_record(trial_dir)
    if before is not None:  # Tune retries a failed trial: a diverged one must not train again
        raise TrialDiverged(before["message"])
    if report_if_completed(meta, trial_id):
        return
    use_gpu = float(meta["gpus"]) > 0
    per_worker = {"CPU": float(meta["cpus"]), **({"GPU": float(meta["gpus"])} if use_gpu else {})}
    loop = {"config": config, "base": base, "meta": meta, "trial_id": trial_id, "trial_name": ctx.get_trial_name(),
            "trial_dir": str(trial_dir)}
    storage_path, storage_fs = Storage(*meta["storage"]).ray_location(*meta["train_storage"])
    trainer_class()(
        ddp_worker, train_loop_config=loop,
        scaling_config=ScalingConfig(num_workers=int(meta["workers"]), use_gpu=use_gpu,
                                     resources_per_worker=per_worker),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=ray.train.RunConfig(name=f"train-{trial_id}", storage_path=storage_path,
                                       storage_filesystem=storage_fs,
                                       checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
                                       logging_config=ray.train.LoggingConfig(log_level="WARNING"),
                                       callbacks=[TuneReportCallback()]),
    ).fit()


def ddp_worker(loop: dict[str, Any]) -> None:
    """One rank of a DDP trial (inside a Ray Train worker; the process group exists)."""
    _quiet_reports()
    meta = loop["meta"]
    torch.set_num_threads(max(1, int(meta["cpus"])))
    cfg = trial_config(loop["config"], loop["base"])
    device = ray.train.torch.get_device()
    if device.type == "cuda":
        torch.cuda.set_device(device)
        cfg = dataclasses.replace(cfg, device=f"cuda:{device.index if device.index is not None else 0}")
    else:
        cfg = dataclasses.replace(cfg, device="cpu")
    comm = DistComm()
    node = node_dataset(cfg, meta.get("data_checksum", ""), of=meta.get("data_checksum_of", "files"))
    trainer = Trainer(cfg, node.data, comm=comm, sync_bn=True)
    run_id, best = load_checkpoint(trainer, ray.train.get_checkpoint())  # every rank loads it
    run = None
    if comm.rank == 0:
        run = open_trial_run(trainer, loop["config"], meta, loop["trial_id"], loop["trial_name"], run_id,
                             data_checksum=node.checksum)
    if meta.get("check_sync"):
        trainer.callbacks.append(lambda metrics, t: assert_in_sync(t))
    pg = ray.util.get_current_placement_group()
    trainer.callbacks.append(_DDPReporter(run, comm.rank, pg.id.hex() if pg is not None else None, best,
                                          BestTestSchedule.of(meta, cfg.epochs, trainer.epoch)))
    monitor = None if run is None else mlflow_log.start_system_metrics(meta["tracking_uri"], run.run_id,
                                                                       resume=not run.new)
    try:
        trainer.fit()
    except Diverged as err:  # the reduced loss: every rank stops at the same epoch
        if run is not None:
            mark_diverged(loop["trial_dir"], err)
            close_diverged(meta["tracking_uri"], run, err)
        raise TrialDiverged(str(err)) from None
    finally:
        if monitor is not None:
            monitor.finish()
    if run is not None:
        mlflow_log.terminate(meta["tracking_uri"], run.run_id, "FINISHED")


def _quiet_reports() -> None:
    """No INFO line per ``ray.train.report`` (Ray Train logs it under the module's file name)."""
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    try:
        from ray.train.v2._internal.execution import context
        logging.getLogger(context.__file__).setLevel(logging.WARNING)
    except ImportError:
        pass


class _DDPReporter:
    """Trainer callback on every rank: rank 0 logs to MLflow; all ranks measure the best
    weights' test accuracy at ``test_at``'s epochs and save (both collective) and call
    ``ray.train.report``, rank 0 with the checkpoint."""

    def __init__(self, run: mlflow_log.TrialRun | None, rank: int, pg_hex: str | None, best: BestEpoch,
                 test_at: BestTestSchedule):
        self.run, self.rank, self.pg_hex, self.best, self.test_at = run, rank, pg_hex, best, test_at

    def __call__(self, metrics: dict[str, Any], trainer: Trainer) -> None:
        # every rank holds the same metrics, weights and checkpoint: all take the same decisions
        record = self.best.take(epoch_record(metrics), trainer, self.test_at.due(int(metrics["epoch"]) + 1))
        done = record[TIME_ATTR]
        if self.run is not None:
            self.run.log_epoch(record, step=done)
        scalars: dict[str, Any] = scalar_record(record)
        if self.pg_hex:
            scalars[PG_KEY] = self.pg_hex
        with tempfile.TemporaryDirectory() as folder:
            trainer.save(Path(folder) / CHECKPOINT_FILE)  # every rank calls it; rank 0 writes
            checkpoint = None
            if self.rank == 0:
                self.best.save(folder)
                write_meta(folder, self.run.run_id if self.run is not None else None, done)
                checkpoint = Checkpoint.from_directory(folder)
            ray.train.report(scalars, checkpoint=checkpoint,
                             checkpoint_dir_name=CHECKPOINT_DIR.format(done))
