"""DDP trials (``--workers-per-trial N`` > 1): the Tune trial runs a Ray Train
``TorchTrainer`` of N workers (gloo on CPUs, NCCL on GPUs) and forwards rank 0's reports
to Tune with ``TuneReportCallback``; every worker runs the trial's life
(``tuning.trial.run``) with a ``RankStrategy``.

Every worker builds ``DistComm`` over the process group Ray Train initialised and a
Trainer with it. Each epoch every rank saves (collective; rank 0 writes) and reports;
rank 0 attaches the checkpoint, with the MLflow run id, and logs to MLflow. A re-run
trial (restored search, retried failure) starts a TorchTrainer of the same name
``train-<trial_id>``, which restores its latest checkpoint on every rank.

Tune ends a stopped trial (ASHA, or at max_t) by killing its actor, so the Train run
never shuts down and its workers' placement group would stay reserved until the search
ends where ``ray[default]`` is missing (Ray Train's own cleaner needs its State API, and
is then left out). Rank 0 therefore reports the group's id (``PG_KEY``) and
``tuning.driver.callbacks.ReleaseTrainGroups`` removes it when Tune is done with the
trial (with ``ray[default]`` Ray's cleaner does so too; removing a removed group is a no-op).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from pathlib import Path
from typing import Any

import ray.train
import torch
from ray.train import Checkpoint, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback

from spmi.config import TrainConfig
from spmi.distributed import DistComm
from tuning.plan.settings import TRAIN_RUNS_DIR
from tuning.record.storage import Storage
from tuning.trial.ray_internals import TorchTrainerWithoutCleaner, quiet_train_reports
from tuning.trial.run import TrialInfo, run_trial
from tuning.trial.spec import TrialSpec

CHECKPOINT_DIR = "epoch_{:04d}"  # a Train checkpoint's folder, by epochs completed
PG_KEY = "train_placement_group"  # result key: hex id of the trial's worker placement group


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
    ``ray[default]`` is installed (any real cluster); else the one without it."""
    return TorchTrainer if has_ray_default() else TorchTrainerWithoutCleaner


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


def run_ddp(config: dict[str, Any], spec: TrialSpec, trial: TrialInfo) -> None:
    """One TorchTrainer run for the trial: ``spec.resources.workers`` workers of its CPUs and GPUs."""
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    res = spec.resources
    use_gpu = res.gpus > 0
    per_worker = {"CPU": float(res.cpus), **({"GPU": float(res.gpus)} if use_gpu else {})}
    location = spec.location
    storage_path, storage_fs = Storage(location.root, location.endpoint).ray_location(location.experiment,
                                                                                      TRAIN_RUNS_DIR)
    trainer_class()(
        functools.partial(ddp_worker, config, spec, trial),
        scaling_config=ScalingConfig(num_workers=res.workers, use_gpu=use_gpu, resources_per_worker=per_worker),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=ray.train.RunConfig(name=f"train-{trial.id}", storage_path=storage_path,
                                       storage_filesystem=storage_fs,
                                       checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
                                       logging_config=ray.train.LoggingConfig(log_level="WARNING"),
                                       callbacks=[TuneReportCallback()]),
    ).fit()


def ddp_worker(config: dict[str, Any], spec: TrialSpec, trial: TrialInfo) -> None:
    """One rank of a DDP trial (inside a Ray Train worker; the process group exists)."""
    quiet_train_reports()
    run_trial(config, spec, trial, RankStrategy(spec.resources.check_sync))


class RankStrategy:
    """One rank of a DDP trial: its own device, ``DistComm`` for agreeing with the others,
    rank 0 the lead; every rank reports through Ray Train, rank 0 with the checkpoint."""

    def __init__(self, check_sync: bool = False):
        device = ray.train.torch.get_device()
        if device.type == "cuda":
            torch.cuda.set_device(device)
        self.device = f"cuda:{device.index if device.index is not None else 0}" if device.type == "cuda" else "cpu"
        self.comm = DistComm()
        self.lead, self.check_sync = self.comm.rank == 0, check_sync
        pg = ray.util.get_current_placement_group()
        self.pg_hex = pg.id.hex() if pg is not None else None

    def place(self, cfg: TrainConfig) -> TrainConfig:
        return dataclasses.replace(cfg, device=self.device)

    def checkpoint(self) -> Any | None:
        return ray.train.get_checkpoint()

    def report(self, scalars: dict[str, Any], folder: str | Path, done: int) -> None:
        if self.pg_hex:
            scalars = {**scalars, PG_KEY: self.pg_hex}
        checkpoint = Checkpoint.from_directory(str(folder)) if self.lead else None
        ray.train.report(scalars, checkpoint=checkpoint, checkpoint_dir_name=CHECKPOINT_DIR.format(done))

    def spool(self, trial_folder: str | Path) -> Path | None:
        return None
