"""A search's resolved settings (``search.json`` in the experiment folder) and every
check that can be done before Ray starts: dataset, method, space, data, resources."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from spmi.config import TrainConfig, config_from_flat, with_dataset_defaults
from spmi.data import check_split_args, default_root, get_info, load_dataset
from spmi.methods import get_method
from spmi.train import check_config
from tuning import mlflow_log
from tuning import settings as S
from tuning.fields import RESERVED, coerce, field_specs
from tuning.spaces import SearchSpace, load_space

PLAN_FILE, SPACE_COPY = "search.json", "space.yaml"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass
class SearchPlan:
    """Everything a search (and its resumption and report) needs; JSON-serialisable."""

    name: str
    storage_path: str
    dataset: str
    method: str
    space_path: str
    num_samples: int
    max_epochs: int
    grace_period: int
    reduction_factor: int
    seed: int
    cpus_per_trial: int
    gpus_per_trial: float
    max_concurrent: int | None
    tracking_uri: str
    base: dict[str, Any]
    preset: str | None = None
    workers_per_trial: int = 1   # > 1: each trial is a Ray Train DDP run; CPUs/GPUs above are per worker
    check_sync: bool = False     # DDP: assert_in_sync after every epoch
    metric: str = S.METRIC
    mode: str = S.MODE
    git_commit: str = "unknown"
    data_checksum: str = ""
    experiment_id: str = ""
    parent_run_id: str = ""
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%d %H:%M:%S"))

    @property
    def experiment_path(self) -> Path:
        return Path(self.storage_path) / self.name

    @property
    def base_config(self) -> TrainConfig:
        return config_from_flat(self.base)

    def save(self) -> Path:
        path = self.experiment_path / PLAN_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(dataclasses.asdict(self), indent=2))
        os.replace(tmp, path)
        return path

    def space(self) -> SearchSpace:
        """The space as it was when the search started (its copy in the experiment folder)."""
        copy = self.experiment_path / SPACE_COPY
        return load_space(copy if copy.exists() else self.space_path, self.method)


def load_plan(experiment_path: str | Path) -> SearchPlan:
    path = Path(experiment_path) / PLAN_FILE
    if not path.is_file():
        raise ValueError(f"{experiment_path} holds no search ({PLAN_FILE} missing)")
    return SearchPlan(**json.loads(path.read_text()))


def find_latest(storage: Path, method: str, dataset: str) -> Path | None:
    """The newest search of ``method`` on ``dataset`` under ``storage``."""
    found = []
    for path in storage.glob(f"*/{PLAN_FILE}"):
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if info.get("method") == method and info.get("dataset") == dataset:
            found.append((path.stat().st_mtime, path.parent))
    return max(found)[1] if found else None


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(S.REPO_ROOT), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(S.REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    commit = out.stdout.strip() or "unknown"
    return commit + ("-dirty" if dirty.stdout.strip() else "")


def parse_sets(items: list[str], method: str, space: SearchSpace) -> dict[str, Any]:
    """``--set NAME=VALUE`` (YAML value) checked like a space file's ``fixed`` entries."""
    specs, out = field_specs(method), {}
    hints = {"epochs": "--max-epochs", "device": "--gpus-per-trial", "dataset": "--dataset", "method": "--method"}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not name:
            raise ValueError(f"--set {item!r}: write NAME=VALUE, e.g. --set batch_size=128")
        if name in RESERVED:
            hint = f"; use {hints[name]}" if name in hints else ""
            raise ValueError(f"--set {name}: set by the search itself{hint}")
        if name not in specs:
            raise ValueError(f"--set {name}: not a TrainConfig field nor an option of method {method}")
        if name in space.params:
            raise ValueError(f"--set {name}: {name} is searched by {space.path}; drop it there or here")
        try:
            out[name] = coerce(specs[name], yaml.safe_load(text))
        except (ValueError, yaml.YAMLError) as err:
            raise ValueError(f"--set {item}: {err}") from None
    return out


def check_data(cfg: TrainConfig) -> str:
    """Locate and load the dataset (DataError when absent), check the split; its checksum."""
    data = load_dataset(cfg.dataset, cfg.data_root, download=cfg.download, verify=cfg.verify_data)
    check_split_args(len(data.train_y), data.info.num_classes, cfg.labelled, cfg.partial_rate, cfg.val_size)
    return data.checksum


def check_resources(cpus: int, gpus: float, local: bool, workers: int = 1) -> None:
    """With ``workers`` > 1 the CPUs and GPUs are per worker (each worker: its own GPUs)."""
    if workers < 1:
        raise ValueError(f"--workers-per-trial {workers} must be >= 1")
    if cpus < 1:
        raise ValueError(f"--cpus-per-trial {cpus} must be >= 1")
    if gpus < 0 or (gpus > 1 and gpus != int(gpus)):
        raise ValueError(f"--gpus-per-trial {gpus} must be a fraction in [0, 1] or a whole number")
    if workers > 1 and gpus != int(gpus):
        raise ValueError(f"--gpus-per-trial {gpus:g} with --workers-per-trial {workers}: each DDP worker needs "
                         f"whole GPUs (NCCL cannot share one GPU between ranks); use 0 or 1")
    each = f" x {workers} workers" if workers > 1 else ""
    if local:
        import torch
        n_gpu = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if gpus * workers > n_gpu:
            have = "no CUDA GPU" if n_gpu == 0 else f"only {n_gpu} GPU(s)"
            raise ValueError(f"--gpus-per-trial {gpus:g}{each} asks for more GPUs than this machine has ({have}); "
                             f"use --gpus-per-trial 0" + (" or fewer workers" if workers > 1 and n_gpu else ""))
        if cpus * workers > (os.cpu_count() or 1):
            raise ValueError(f"--cpus-per-trial {cpus}{each} exceeds the {os.cpu_count()} CPUs of this machine")


def make_plan(args: Any, storage: Path, name: str, tracking_uri: str) -> tuple[SearchPlan, SearchSpace]:
    """Resolve a new search from the CLI arguments; every problem is a ValueError,
    DataError or SpaceError with a one-line message."""
    get_info(args.dataset)
    get_method(args.method)
    if not NAME_RE.match(name):
        raise ValueError(f"--name {name!r}: use letters, digits, '.', '_' or '-'")
    preset = dict(S.PRESETS[args.preset]) if args.preset else {}
    space_path = Path(args.space).resolve() if args.space else S.default_space(args.method, args.dataset, args.preset)
    space = load_space(space_path, args.method)
    if space.dataset is not None and space.dataset != args.dataset:
        raise ValueError(f"{space_path} is a space for dataset {space.dataset}, not {args.dataset}")

    def pick(key: str, fallback: Any) -> Any:
        value = getattr(args, key, None)
        return value if value is not None else preset.get(key, fallback)

    # the dataset's paper settings (its registry entry) fill whatever the space, preset and CLI leave unset
    values: dict[str, Any] = {**space.settings, **space.fixed, **dict(preset.get("config", {}))}
    cli = {"labelled": args.labelled, "partial_rate": args.partial_rate, "data_root": args.data_root,
           "val_size": args.val_size, "unlabelled_size": args.unlabelled_size}
    values |= {k: v for k, v in cli.items() if v is not None}
    if args.no_verify_data:
        values["verify_data"] = False
    values |= parse_sets(args.set or [], args.method, space)
    # the search decides on val/acc: the test set only at each new best val/acc and the last epoch
    values.setdefault("eval_test", "best")
    max_epochs = int(pick("max_epochs", S.PAPER_EPOCHS))
    if max_epochs < 1:
        raise ValueError(f"--max-epochs {max_epochs} must be >= 1")
    workers = int(getattr(args, "workers_per_trial", None) or 1)
    gpus = float(pick("gpus_per_trial", _default_gpus()))
    cpus = int(pick("cpus_per_trial", _default_cpus(gpus)))
    check_resources(cpus, gpus, local=args.address is None, workers=workers)
    values |= {"dataset": args.dataset, "method": args.method, "epochs": max_epochs,
               "device": "cuda" if gpus > 0 else "cpu", "progress": False, "out": None}
    root = values.get("data_root")
    values["data_root"] = str(Path(root).expanduser().resolve() if root else default_root(args.dataset).resolve())
    cfg = with_dataset_defaults(config_from_flat(values))
    if cfg.val_size <= 0:
        raise ValueError("--val-size must be > 0: the search optimises validation accuracy (val/acc) on a "
                         "held-out split and never test accuracy")
    for point in space.points_to_evaluate():
        check_config(config_from_flat({**point, "device": "cpu"}, cfg))  # GPUs were checked above
    num_samples = int(pick("num_samples", S.DEFAULT_NUM_SAMPLES))
    if num_samples < 1:
        raise ValueError(f"--num-samples {num_samples} must be >= 1")
    grace = _grace_period(args, space, max_epochs, int(preset.get("grace_margin", S.DEFAULT_GRACE_MARGIN)),
                          cfg.options)
    reduction = int(pick("reduction_factor", S.DEFAULT_REDUCTION_FACTOR))
    if reduction < 2:
        raise ValueError(f"--reduction-factor {reduction} must be >= 2")
    # a preset's trial count assumes single-process trials; DDP trials get what the resources allow
    max_conc = args.max_concurrent if workers > 1 else pick("max_concurrent", None)
    if max_conc is not None and int(max_conc) < 1:
        raise ValueError(f"--max-concurrent {max_conc} must be >= 1")
    checksum = check_data(cfg)
    mlflow_log.check_store(tracking_uri)
    plan = SearchPlan(
        name=name, storage_path=str(storage), dataset=args.dataset, method=args.method, space_path=str(space_path),
        num_samples=num_samples, max_epochs=max_epochs, grace_period=grace, reduction_factor=reduction,
        seed=int(args.seed), cpus_per_trial=cpus, gpus_per_trial=gpus,
        max_concurrent=None if max_conc is None else int(max_conc), tracking_uri=tracking_uri,
        base=cfg.to_dict(), preset=args.preset, workers_per_trial=workers,
        check_sync=bool(getattr(args, "check_sync", False)), git_commit=git_commit(), data_checksum=checksum)
    return plan, space


def copy_space(plan: SearchPlan) -> None:
    dest = plan.experiment_path / SPACE_COPY
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not dest.exists():
        shutil.copyfile(plan.space_path, dest)


def _grace_period(args: Any, space: SearchSpace, max_epochs: int, margin: int,
                  options: dict[str, Any] | None = None) -> int:
    start = space.max_start_epoch(options)
    if args.grace_period is not None:
        if args.grace_period <= start or args.grace_period > max_epochs:
            raise ValueError(f"--grace-period {args.grace_period} must exceed the largest warm-up/start epoch of "
                             f"the space ({start}) and be <= --max-epochs {max_epochs}")
        return int(args.grace_period)
    return max(1, min(max_epochs, start + margin))


def _default_gpus() -> float:
    import torch
    return 1.0 if torch.cuda.is_available() else 0.0


def _default_cpus(gpus: float) -> int:
    if gpus <= 0:
        return 1
    import torch
    return max(1, (os.cpu_count() or 1) // max(1, torch.cuda.device_count()))
