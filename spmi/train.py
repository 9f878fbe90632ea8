"""Single-run CLI: ``python -m spmi.train --dataset fmnist --method spmi --out runs/x``.

Bad input is one line on stderr (exit 2) before any training starts.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from spmi.cli_options import OneLineParser, add_dataclass_flags
from spmi.config import TrainConfig, config_from_flat
from spmi.data import DATASETS, DataError, check_split_args, get_info, load_dataset
from spmi.device import resolve_device
from spmi.methods import get_method, list_methods
from spmi.models import list_models
from spmi.options import build
from spmi.records import JsonlWriter, summary_line
from spmi.trainer import CHECKPOINT_NAME, Trainer


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, list[str]]]:
    methods = list_methods()
    parser = OneLineParser(
        prog="python -m spmi.train",
        description="Train one semi-supervised partial-label model (SPMI or a baseline).",
        epilog=f"datasets: {', '.join(sorted(DATASETS))}; methods: {', '.join(methods)}; "
               f"models: {', '.join(list_models())}")
    run = parser.add_argument_group("run")
    add_dataclass_flags(run, TrainConfig, skip=frozenset({"options", "progress"}))
    run.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    run.add_argument("--no-progress", action="store_true", help="no per-epoch progress bar")
    seen: set[str] = set()
    owners: dict[str, list[str]] = {}
    for name in methods:
        cls = get_method(name)
        group = parser.add_argument_group(f"method options ({name})")
        add_dataclass_flags(group, cls.Options, seen=seen)
        for f in cls.Options.__dataclass_fields__:
            owners.setdefault(f, []).append(name)
    return parser, owners


def config_from_args(args: argparse.Namespace, owners: dict[str, list[str]]) -> TrainConfig:
    given: dict[str, Any] = {k: v for k, v in vars(args).items() if k not in ("resume", "no_progress")}
    cfg = config_from_flat(given)
    cfg.progress = not args.no_progress
    method_cls = get_method(cfg.method)
    for name in cfg.options:
        if cfg.method not in owners.get(name, []):
            valid = ", ".join("--" + f.replace("_", "-") for f in method_cls.Options.__dataclass_fields__)
            raise ValueError(f"--{name.replace('_', '-')} does not apply to method {cfg.method} "
                             f"(its options: {valid or 'none'})")
    return cfg


def check_config(cfg: TrainConfig) -> None:
    """Everything checkable without loading data: one clear ValueError/DataError each."""
    cfg.validate()
    info = get_info(cfg.dataset)
    build(get_method(cfg.method).Options, cfg.options, cfg.method)
    if cfg.model is not None and cfg.model not in list_models():
        raise ValueError(f"unknown model {cfg.model!r}; choose one of: {', '.join(list_models())}")
    if cfg.labelled % info.num_classes:
        raise ValueError(f"--labelled {cfg.labelled} must be a positive multiple of the "
                         f"{info.num_classes} classes of {cfg.dataset}")
    resolve_device(cfg.device)


def main(argv: list[str] | None = None) -> int:
    parser, owners = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args, owners)
        check_config(cfg)
        if args.resume and not cfg.out:
            raise ValueError("--resume needs --out, the folder of the run to continue")
        ckpt_path = Path(cfg.out) / CHECKPOINT_NAME if cfg.out else None
        if args.resume and not ckpt_path.exists():
            raise ValueError(f"--resume: no checkpoint at {ckpt_path}; run without --resume to start")
        data = load_dataset(cfg.dataset, cfg.data_root, download=cfg.download, verify=cfg.verify_data)
        check_split_args(len(data.train_y), data.info.num_classes, cfg.labelled, cfg.partial_rate, cfg.val_size)
        trainer = Trainer(cfg, data)
        if args.resume:
            trainer.load(ckpt_path)
    except (ValueError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if cfg.out:
        trainer.callbacks.append(JsonlWriter(Path(cfg.out) / "metrics.jsonl", start_epoch=trainer.epoch))
    trainer.callbacks.append(lambda m, t: print(summary_line(m, cfg.epochs), flush=True))
    print(f"{cfg.method} on {cfg.dataset}: l={cfg.labelled} p={cfg.partial_rate} "
          f"N_u={len(trainer.unl_idx)} val={len(trainer.val_idx)} device={trainer.device} "
          f"steps/epoch={trainer.steps_per_epoch} start epoch={trainer.epoch}", flush=True)
    trainer.fit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
