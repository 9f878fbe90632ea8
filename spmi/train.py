"""Single-run CLI: ``python -m spmi.train --dataset fmnist --method spmi --out runs/x``.

Exit status: 0 done; 2 bad input (one line on stderr, before any training starts, also a
run folder that already holds a run, or an unreadable checkpoint); 3 the run diverged (a
non-finite loss: one line on stderr, the epoch is neither recorded nor checkpointed).
A run folder that holds a run is never overwritten: ``--resume`` continues it,
``--overwrite`` moves it aside to ``OUT.<time>`` first. ``--workers N``
trains one DDP process per worker (gloo on CPU, NCCL with one GPU each on CUDA); so does
a torchrun launch. Rank 0 prints and writes the records and the checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from spmi.cli_options import DefaultsFormatter, OneLineParser, add_dataclass_flags, invoked_as
from spmi.comm import Comm
from spmi.config import CONFIG_FIELDS, TrainConfig, resolve
from spmi.data import DATASETS, DataError, check_split_args, load_dataset
from spmi.device import resolve_device
from spmi.distributed import assert_in_sync, destroy, init_from_env, spawn
from spmi.methods import get_method, list_methods
from spmi.models import list_models
from spmi.records import JsonlWriter, summary_line
from spmi.trainer import CHECKPOINT_NAME, Diverged, Trainer

CLI_ONLY = frozenset({"resume", "no_progress", "workers", "no_sync_bn", "check_sync", "overwrite",
                      "allow_schedule_change"})
EXIT_BAD_INPUT, EXIT_DIVERGED = 2, 3
RECORDS_NAME = "metrics.jsonl"


def dataset_option_defaults() -> dict[str, str]:
    """Help text of the method options each dataset sets (T_w, unlabelled EMA), which take
    the place of the options' own defaults: the most common value, then the exceptions."""
    values: dict[str, dict[Any, list[str]]] = {}
    for name, info in DATASETS.items():
        for option, value in info.paper_options().items():
            values.setdefault(option, {}).setdefault(value, []).append(name)
    out = {}
    for option, by_value in values.items():
        common = max(by_value, key=lambda v: len(by_value[v]))
        rest = [f"{'/'.join(names)} {v}" for v, names in by_value.items() if v != common]
        out[option] = "the dataset's: " + ", ".join([str(common), *rest])
    return out


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, list[str]]]:
    methods = list_methods()
    parser = OneLineParser(
        prog=invoked_as("spmi.train", "python -m spmi.train"), formatter_class=DefaultsFormatter,
        description="Train one semi-supervised partial-label model (SPMI or a baseline).",
        epilog=f"datasets: {', '.join(sorted(DATASETS))}; methods: {', '.join(methods)}; "
               f"models: {', '.join(list_models())}")
    run = parser.add_argument_group("run")
    add_dataclass_flags(run, TrainConfig, skip=frozenset({"options", "progress"}))
    run.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    run.add_argument("--overwrite", action="store_true",
                     help="OUT holds a run: move it aside to OUT.<time> and start afresh (nothing is deleted)")
    run.add_argument("--allow-schedule-change", action="store_true",
                     help="with --resume: accept another --epochs (re-shapes the cosine schedule from there on)")
    run.add_argument("--no-progress", action="store_true", help="no per-epoch progress bar")
    ddp = parser.add_argument_group("multi-process (DDP)")
    ddp.add_argument("--workers", type=int, default=1, metavar="N",
                     help="worker processes (CUDA: one GPU each, NCCL; CPU: gloo)")
    ddp.add_argument("--no-sync-bn", action="store_true",
                     help="per-worker BatchNorm statistics (default: over the global batch)")
    ddp.add_argument("--check-sync", action="store_true",
                     help="check after every epoch that all workers hold identical state")
    seen: set[str] = set()
    owners: dict[str, list[str]] = {}
    by_dataset = dataset_option_defaults()
    for name in methods:
        cls = get_method(name)
        group = parser.add_argument_group(f"method options ({name})")
        add_dataclass_flags(group, cls.Options, seen=seen, defaults=by_dataset)
        for f in cls.Options.__dataclass_fields__:
            owners.setdefault(f, []).append(name)
    return parser, owners


def config_from_args(args: argparse.Namespace, owners: dict[str, list[str]]) -> TrainConfig:
    """The resolved (checked) config of the given flags; a method option of another
    method is refused by name. The device's presence is checked by ``main``."""
    given: dict[str, Any] = {k: v for k, v in vars(args).items() if k not in CLI_ONLY}
    method = given.get("method", TrainConfig.method)
    method_cls = get_method(method)
    for name in given:
        if name not in CONFIG_FIELDS and method not in owners.get(name, []):
            valid = ", ".join("--" + f.replace("_", "-") for f in method_cls.Options.__dataclass_fields__)
            raise ValueError(f"--{name.replace('_', '-')} does not apply to method {method} "
                             f"(its options: {valid or 'none'})")
    return resolve({**given, "progress": not args.no_progress})


def check_workers(workers: int, device: str) -> None:
    if workers < 1:
        raise ValueError(f"--workers {workers} must be at least 1")
    if workers > 1 and torchrun_world() > 1:
        raise ValueError("--workers under a torchrun launch: let torchrun start the workers")
    if workers > 1 and resolve_device(device).type == "cuda" and workers > torch.cuda.device_count():
        raise ValueError(f"--workers {workers} needs one GPU each; {torch.cuda.device_count()} available")


def holds_run(folder: Path) -> bool:
    """Whether ``folder`` holds a run: a checkpoint or a non-empty record file."""
    records = folder / RECORDS_NAME
    return (folder / CHECKPOINT_NAME).exists() or (records.is_file() and records.stat().st_size > 0)


def check_out(out: str | None, resume: bool, overwrite: bool) -> None:
    """The run folder: a folder (or creatable), and one holding a run only with --resume or --overwrite."""
    if overwrite and resume:
        raise ValueError("--overwrite starts afresh and --resume continues: give one of them")
    if overwrite and not out:
        raise ValueError("--overwrite needs --out, the run folder to move aside")
    if not out:
        return
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder; give a folder for the run")
    if resume:
        if not (folder / CHECKPOINT_NAME).exists():
            raise ValueError(f"--resume: no checkpoint at {folder / CHECKPOINT_NAME}; run without --resume to start")
    elif folder.is_dir() and holds_run(folder) and not overwrite:
        raise ValueError(f"--out {out} already holds a run; continue it with --resume, write to another --out, "
                         f"or add --overwrite to move it aside to {out}.<time>")


def prepare_out(out: str, overwrite: bool) -> None:
    """Move an old run aside (``--overwrite``; under torchrun rank 0 alone), then make sure
    the folder can be written."""
    folder = Path(out)
    if overwrite and int(os.environ.get("RANK", "0")) == 0 and folder.is_dir() and holds_run(folder):
        aside = Path(f"{folder}.{time.strftime('%Y%m%d-%H%M%S')}")
        n = 1
        while aside.exists():
            aside, n = Path(f"{folder}.{time.strftime('%Y%m%d-%H%M%S')}-{n}"), n + 1
        os.replace(folder, aside)
        print(f"moved the previous run in {folder} to {aside}", flush=True)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise ValueError(f"--out {out}: cannot write the run folder ({err.strerror or err})") from None


def torchrun_world() -> int:
    """World size of a torchrun-style launch (1 when not launched so)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def main(argv: list[str] | None = None) -> int:
    parser, owners = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args, owners)
        resolve_device(cfg.device)
        check_workers(args.workers, cfg.device)
        if args.resume and not cfg.out:
            raise ValueError("--resume needs --out, the folder of the run to continue")
        if args.allow_schedule_change and not args.resume:
            raise ValueError("--allow-schedule-change applies only with --resume")
        check_out(cfg.out, args.resume, args.overwrite)
        data = load_dataset(cfg.dataset, cfg.data_root, download=cfg.download, verify=cfg.verify_data)
        check_split_args(len(data.train_y), data.info.num_classes, cfg.labelled, cfg.partial_rate, cfg.val_size,
                         cfg.val_from_labelled, cfg.val_labels)
        if cfg.out:
            prepare_out(cfg.out, args.overwrite)
    except (ValueError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    run_args = (args.resume, args.allow_schedule_change, not args.no_sync_bn, args.check_sync)
    device_type = resolve_device(cfg.device).type
    if args.workers > 1:
        del data  # each worker loads its own copy
        return max(spawn(worker, args.workers, cfg, *run_args, device_type=device_type))
    if torchrun_world() > 1:
        comm = init_from_env(device_type)
        try:
            return worker(comm, cfg, *run_args)
        finally:
            destroy()
    return run(Comm(), cfg, data, *run_args)


def worker(comm: Comm, cfg: TrainConfig, resume: bool, allow_schedule_change: bool, sync_bn: bool,
           check_sync: bool) -> int:
    """One DDP worker: its GPU (CUDA), the data (checked by the launcher), the run."""
    if resolve_device(cfg.device).type == "cuda":
        cfg = dataclasses.replace(cfg, device=f"cuda:{torch.cuda.current_device()}")
    data = load_dataset(cfg.dataset, cfg.data_root, download=False, verify=False)
    return run(comm, cfg, data, resume, allow_schedule_change, sync_bn, check_sync)


def run(comm: Comm, cfg: TrainConfig, data: Any, resume: bool, allow_schedule_change: bool, sync_bn: bool,
        check_sync: bool) -> int:
    """Build the trainer (resuming if asked) and train; rank 0 reports. Exit status."""
    try:
        trainer = Trainer(cfg, data, comm=comm, sync_bn=sync_bn)
        if resume:
            trainer.load(Path(cfg.out) / CHECKPOINT_NAME, allow_schedule_change)
    except (ValueError, DataError) as err:  # the same on every rank
        if comm.rank == 0:
            print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if check_sync and comm.world_size > 1:
        trainer.callbacks.append(lambda m, t: assert_in_sync(t))
    if comm.rank == 0:
        if cfg.out:
            trainer.callbacks.append(JsonlWriter(Path(cfg.out) / RECORDS_NAME, start_epoch=trainer.epoch))
        trainer.callbacks.append(lambda m, t: print(summary_line(m, cfg.epochs), flush=True))
        workers = f" workers={comm.world_size}" if comm.world_size > 1 else ""
        sets = " ".join(f"{name}={len(images.idx)}" for name, images in trainer.eval_sets.items())
        print(f"{cfg.method} on {cfg.dataset}: l={cfg.labelled} p={cfg.partial_rate} "
              f"N_u={len(trainer.unl_idx)} {sets} device={trainer.device}{workers} "
              f"steps/epoch={trainer.steps_per_epoch} start epoch={trainer.epoch}", flush=True)
    try:
        trainer.fit()
    except Diverged as err:  # the reduced loss: every rank stops at the same epoch
        if comm.rank == 0:
            kept = (f"; the checkpoint of epoch {trainer.epoch} is kept in {cfg.out}"
                    if cfg.out and trainer.epoch else "")
            print(f"error: {err}{kept}", file=sys.stderr, flush=True)
        return EXIT_DIVERGED
    return 0


if __name__ == "__main__":
    sys.exit(main())
