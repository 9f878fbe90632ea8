"""A search's resolved settings (``search.json`` in the experiment folder) and every
check that can be done before Ray starts: dataset, method, space, data, resources."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from spmi.config import TrainConfig, resolve
from spmi.data import (
    DataError,
    check_split_args,
    default_root,
    file_md5s,
    files_checksum,
    get_info,
    load_dataset,
    spec_checksum,
)
from spmi.methods import get_method
from spmi.options import meta
from tuning.plan import settings as S
from tuning.plan.fields import coerce, field_specs, nearest_hint, owned_by_search
from tuning.plan.selection import DEFAULT_EPOCH_RULE, Selection, check_rule
from tuning.plan.spaces import SearchSpace, load_space
from tuning.record import mlflow_log, optuna_study, secrets
from tuning.record.storage import Storage, is_uri, open_storage

PLAN_FILE, SPACE_COPY = "search.json", "space.yaml"
# of the plans a search or grid writes (search.json, confirm.json, reproduce.json): 1 is the
# layout before tuning/'s wings, whose Tune state (tuner.pkl, searcher state) pickled
# classes by module paths that no longer exist
LAYOUT_VERSION = 2
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class SearchOptions:
    """What a new search is asked for (the ``tuning/search.py`` flags that shape its plan);
    ``None`` leaves a value to the preset, the space file, the dataset or the default."""

    dataset: str
    method: str = "spmi"
    preset: str | None = None
    space: str | None = None
    labelled: int | None = None
    partial_rate: float | None = None
    data_root: str | None = None
    val_size: int | None = None
    unlabelled_size: int | None = None
    val_labels: str | None = None        # what the partial-label validation metrics see (spmi.config)
    val_from_labelled: int | None = None  # validation images carved from the labelled set
    verify_data: bool = True
    sets: tuple[str, ...] = ()           # ``--set NAME=VALUE`` items
    num_samples: int | None = None
    max_epochs: int | None = None
    grace_period: int | None = None
    reduction_factor: int | None = None
    seed: int = 0
    max_concurrent: int | None = None
    gpus_per_trial: float | None = None
    cpus_per_trial: int | None = None
    workers_per_trial: int = 1
    check_sync: bool = False
    local: bool = True                   # trials run on this machine (no --address)
    optuna_storage: str | None = None
    warm_start: str | None = None
    epoch_rule: str = DEFAULT_EPOCH_RULE
    metric: str = S.METRIC
    searcher: str = "tpe"
    scheduler: str = "asha"


@dataclass(frozen=True)
class SearchPlan:
    """Everything a search (and its resumption and report) needs; JSON-serialisable, and
    never changed once built: a step that learns something (the MLflow ids, the concurrency
    the cluster allows) makes a new plan with ``dataclasses.replace`` and saves it.
    ``storage_path`` is an absolute local folder or a URI (see tuning.record.storage)."""

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
    base: TrainConfig            # resolved and checked (search.json holds its to_dict())
    preset: str | None = None
    workers_per_trial: int = 1   # > 1: each trial is a Ray Train DDP run; CPUs/GPUs above are per worker
    check_sync: bool = False     # DDP: assert_in_sync after every epoch
    metric: str = S.METRIC
    mode: str = S.MODE
    git_commit: str = "unknown"
    data_checksum: str = ""      # the data's reference: a files checksum (tuning.plan.check_data)
    data_checksum_of: str = "arrays"  # "files"; a search started before the files checksum: the decoded arrays
    optuna_storage: str = ""     # RDB URL of the Optuna study (named like the search)
    tpe: optuna_study.TpeSettings | None = None  # the TPESampler's, kept across resume
    warm_start: str | None = None  # the study whose evaluated trials seeded this one
    command: str = ""            # the command line that started the search
    experiment_id: str = ""
    parent_run_id: str = ""
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%d %H:%M:%S"))
    storage_endpoint: str | None = None  # S3-compatible endpoint of an s3:// storage_path
    epoch_rule: str = DEFAULT_EPOCH_RULE  # which epoch's val/acc scores a trial (tuning.plan.selection)
    searcher: str = "tpe"         # who proposes the trials (settings.SEARCHERS)
    scheduler: str = "asha"       # who stops them (settings.SCHEDULERS)
    version: int = LAYOUT_VERSION  # of tuning/'s layout that wrote it (1: before the wings)

    def __post_init__(self) -> None:
        check_rule(self.epoch_rule)
        if self.searcher not in S.SEARCHERS or self.scheduler not in S.SCHEDULERS:
            raise ValueError(f"--searcher {self.searcher} / --scheduler {self.scheduler}: choose from "
                             f"{', '.join(S.SEARCHERS)} / {', '.join(S.SCHEDULERS)}")

    @property
    def selection(self) -> Selection:
        """How the search's configuration is selected (the report, Optuna, confirmation, publishing)."""
        return Selection(self.epoch_rule, self.max_epochs, self.metric)

    @functools.cached_property
    def storage(self) -> Storage:
        return Storage(self.storage_path, self.storage_endpoint)

    @property
    def experiment_path(self) -> str:
        """The search's folder: a local path or a URI."""
        return self.storage.uri(self.name)

    @property
    def base_config(self) -> TrainConfig:
        """The search's base config (resolved and checked once, when the plan was made or read)."""
        return self.base

    def to_dict(self) -> dict[str, Any]:
        """What ``search.json`` holds."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        # the Optuna URL's password stays in memory: a resume takes it from the database client's own
        # sources ($PGPASSWORD, ~/.pgpass) or from --optuna-storage
        out |= {k: secrets.mask(out[k]) for k in ("optuna_storage", "tracking_uri", "command") if out.get(k)}
        return out | {"base": self.base.to_dict(), "tpe": {} if self.tpe is None else dataclasses.asdict(self.tpe)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchPlan:
        """A plan from ``search.json`` (version 1: the layout before the wings, without the field)."""
        tpe = data.get("tpe") or None
        return cls(**{"version": 1, **data, "base": resolve(data["base"]),
                      "tpe": None if tpe is None else optuna_study.TpeSettings(**tpe)})

    def save(self) -> str:
        self.storage.write_text(json.dumps(self.to_dict(), indent=2), self.name, PLAN_FILE)
        return self.storage.uri(self.name, PLAN_FILE)

    @property
    def study_attrs(self) -> optuna_study.StudyAttrs:
        """What the Optuna study records about the search (checked by a warm start)."""
        return study_attrs(self.method, self.dataset, self.metric, self.mode, self.max_epochs, self.base)

    def space(self) -> SearchSpace:
        """The space as it was when the search started: its resolved copy in the experiment
        folder (a plain space file; older searches copied their file as it was)."""
        if self.storage.is_file(self.name, SPACE_COPY):
            with self.storage.local_copy(self.name, SPACE_COPY) as copy:
                return load_space(copy, self.method)
        return load_space(self.space_path, self.method, self.dataset, self.preset)


def study_attrs(method: str, dataset: str, metric: str, mode: str, max_epochs: int,
                cfg: TrainConfig) -> optuna_study.StudyAttrs:
    """The study's record of a search, its data protocol (``optuna_study.PROTOCOL``) from ``cfg``."""
    protocol = optuna_study.DataProtocol(**{k: getattr(cfg, k) for k in optuna_study.PROTOCOL})
    return optuna_study.StudyAttrs(method, dataset, metric, mode, max_epochs, protocol)


def split_location(experiment: str | Path) -> tuple[str, str]:
    """``(storage root, search name)`` of a search's folder (a path or a URI)."""
    text = str(experiment).rstrip("/")
    if is_uri(text):
        root, _, name = text.rpartition("/")
        if root.endswith(":/") or not name:
            raise ValueError(f"{experiment}: give the search's folder, <storage-path>/<name>")
        return root, name
    path = Path(text).expanduser().resolve()
    return str(path.parent), path.name


def load_plan(experiment: str | Path, endpoint: str | None = None) -> SearchPlan:
    """The plan of the search at ``experiment`` (a local folder or a URI). The storage it
    was found in replaces the saved one (a moved folder still works), and the default study
    (``<storage path>/optuna.db``) is looked for there too; ``endpoint`` (else
    the AWS endpoint environment) is the S3 endpoint."""
    root, name = split_location(experiment)
    storage = open_storage(root, endpoint)
    try:
        text = storage.read_text(name, PLAN_FILE) if storage.is_file(name, PLAN_FILE) else None
    except OSError as err:
        raise ValueError(f"cannot read {storage.uri(name, PLAN_FILE)}: {str(err).splitlines()[0]}") from None
    if text is None:
        raise ValueError(f"{experiment} holds no search ({PLAN_FILE} missing)")
    data = json.loads(text)
    saved = str(data.get("storage_path", ""))
    if storage.local and not is_uri(saved) and data.get("optuna_storage") == optuna_study.default_storage(saved):
        data["optuna_storage"] = optuna_study.default_storage(storage.root)  # the default study moved with it
    return SearchPlan.from_dict({**data, "storage_path": storage.root, "storage_endpoint": storage.endpoint})


def check_layout(version: int, folder: str | Path, what: str) -> None:
    """A search or grid written by another layout of tuning/ cannot be resumed: its saved
    Ray Tune state names classes by module paths this code does not have (ValueError, one
    line, saying what still works)."""
    if version == LAYOUT_VERSION:
        return
    which = "an earlier" if version < LAYOUT_VERSION else "a newer"
    keep = (f"its trials and report stay readable (python tuning/report.py {folder}); start a new search with "
            f"another --name") if what == "search" else \
        "its finished runs stay in MLflow; move the folder away to run it anew"
    raise ValueError(f"{folder}: this {what} was started by {which} layout of tuning/ (version {version}, this one "
                     f"writes {LAYOUT_VERSION}), whose saved Ray Tune state names modules that do not exist here, so "
                     f"it cannot be resumed; {keep}")


def find_latest(storage: Storage, method: str, dataset: str) -> str | None:
    """The name of the newest search of ``method`` on ``dataset`` under ``storage``."""
    import pyarrow.fs as pafs
    found = []
    for entry in storage.listdir():
        if entry.type != pafs.FileType.Directory:
            continue
        name = entry.base_name
        info = storage.info(name, PLAN_FILE)
        if info.type != pafs.FileType.File:
            continue
        try:
            plan = json.loads(storage.read_text(name, PLAN_FILE))
        except (OSError, ValueError):
            continue
        if plan.get("method") == method and plan.get("dataset") == dataset:
            found.append((info.mtime_ns or 0, plan.get("created", ""), name))
    return max(found)[2] if found else None


def git_commit() -> str:
    """The commit of the source checkout the code runs from (``-dirty`` with changes);
    ``unknown`` for an installed package (its folder may lie inside another repository)."""
    if not (S.REPO_ROOT / ".git").exists():
        return "unknown"
    try:
        out = subprocess.run(["git", "-C", str(S.REPO_ROOT), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(S.REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    commit = out.stdout.strip() or "unknown"
    return commit + ("-dirty" if dirty.stdout.strip() else "")


def parse_sets(items: list[str], method: str, space: SearchSpace | None = None) -> dict[str, Any]:
    """``--set NAME=VALUE`` (YAML value) checked like a space file's ``fixed`` entries; a name
    the ``space`` searches is refused (``None``: nothing is searched, e.g. reproduce)."""
    specs, out = field_specs(method), {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not name:
            raise ValueError(f"--set {item!r}: write NAME=VALUE, e.g. --set batch_size=128")
        hint = owned_by_search(method, name)
        if hint is not None:
            raise ValueError(f"--set {name}: set by the search itself{hint}")
        if name not in specs:
            raise ValueError(f"--set {name}: not a TrainConfig field nor an option of method {method}"
                             f"{nearest_hint(method, name)}")
        if space is not None and name in space.params:
            raise ValueError(f"--set {name}: {name} is searched by {space.path}; drop it there or here")
        try:
            out[name] = coerce(specs[name], yaml.safe_load(text))
        except (ValueError, yaml.YAMLError) as err:
            raise ValueError(f"--set {item}: {err}") from None
    return out


def check_data(cfg: TrainConfig, local: bool = True) -> str:
    """The data's reference, a files checksum (``spmi.data.files_checksum``) that every
    trial's node checks its copy against, after the checks this machine can make.

    With the files MD5-checked against the dataset's spec (``verify_data``) the reference
    is the spec's: a cluster driver (``local`` False) reads no data and checks the split
    against the spec's sizes, while a local one locates, checks and decodes the dataset
    first (DataError saying how to fix it, before Ray starts). With ``--no-verify-data``
    the files are not the spec's, so the driver's own files are the reference."""
    if cfg.verify_data and not local:
        info = get_info(cfg.dataset)
        check_split_args(info.train_size, info.num_classes, cfg.labelled, cfg.partial_rate, cfg.val_size)
        return spec_checksum(cfg.dataset)
    try:
        data = load_dataset(cfg.dataset, cfg.data_root, download=cfg.download, verify=cfg.verify_data)
    except DataError as err:
        if local:
            raise
        raise DataError(f"{err}; with --no-verify-data the driver's copy is the reference the nodes' files must "
                        f"equal: start the search where the files are, or drop --no-verify-data (the spec's MD5 "
                        f"sums are the reference then)") from None
    check_split_args(len(data.train_y), data.info.num_classes, cfg.labelled, cfg.partial_rate, cfg.val_size)
    if cfg.verify_data:
        return spec_checksum(cfg.dataset)
    return files_checksum(file_md5s(cfg.dataset, cfg.data_root, verify=False))


def check_metric(metric: str, cfg: TrainConfig) -> str:
    """The search's objective, checked against its validation set: a partial-label criterion
    needs validation images that carry candidate sets (with true labels it equals val/acc)."""
    if metric not in S.OBJECTIVES:
        raise ValueError(f"--metric {metric}: choose one of {', '.join(S.OBJECTIVES)}")
    if metric != S.METRIC and cfg.val_labels == "true" and not cfg.val_from_labelled:
        raise ValueError(f"--metric {metric}: the validation images carry their true labels, where {metric} equals "
                         f"val/acc; give them candidate sets (--val-labels partial) or carve them from the labelled "
                         f"set (--val-from-labelled K)")
    return metric


def search_data_root(dataset: str, given: str | None, local: bool) -> str:
    """The search's absolute ``data_root``: ``given``, else the dataset's default folder;
    on a cluster that of its Debian package where it has one (the nodes' place for it,
    whether or not the driver has it)."""
    if given:
        return str(Path(given).expanduser().resolve())
    debian = get_info(dataset).source.debian
    if not local and debian is not None:
        return str(debian.folder)
    return str(default_root(dataset).resolve())


def check_writable(storage: Path) -> None:
    """The storage folder exists (or is created) and takes files: a one-line error now,
    not minutes of retries inside Ray."""
    if storage.exists() and not storage.is_dir():
        raise ValueError(f"--storage-path {storage} is a file, not a folder")
    probe = storage
    while not probe.exists():  # nothing is created before the search is known to start
        probe = probe.parent
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as err:
        raise ValueError(f"--storage-path {storage} cannot be written ({err.strerror or err}); "
                         f"give a writable folder") from None


def check_resources(cpus: int, gpus: float, local: bool, workers: int = 1) -> None:
    """With ``workers`` > 1 the CPUs and GPUs are per worker (each worker: its own GPUs)."""
    if workers < 1:
        raise ValueError(f"--workers-per-trial {workers} must be >= 1")
    if cpus < 1:
        raise ValueError(f"--cpus-per-trial {cpus} must be >= 1")
    if not math.isfinite(gpus):
        raise ValueError(f"--gpus-per-trial {gpus} is not a finite number")
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


def make_plan(opts: SearchOptions, storage: Storage, name: str,
              tracking_uri: str) -> tuple[SearchPlan, SearchSpace]:
    """Resolve a new search from what was asked for; every problem is a ValueError,
    DataError or SpaceError with a one-line message."""
    get_info(opts.dataset)
    get_method(opts.method)
    if not NAME_RE.match(name):
        raise ValueError(f"--name {name!r}: use letters, digits, '.', '_' or '-'")
    preset = dict(S.PRESETS[opts.preset]) if opts.preset else {}
    space_path = Path(opts.space).resolve() if opts.space else S.default_space(opts.method)
    space = load_space(space_path, opts.method, opts.dataset, opts.preset)
    if space.dataset is not None and space.dataset != opts.dataset:
        raise ValueError(f"{space_path} is a space for dataset {space.dataset}, not {opts.dataset}")

    def pick(key: str, fallback: Any) -> Any:
        value = getattr(opts, key)
        return value if value is not None else preset.get(key, fallback)

    # the dataset's paper settings (its registry entry) fill whatever the space, preset and CLI leave unset
    values: dict[str, Any] = {**space.settings, **space.fixed, **dict(preset.get("config", {}))}
    cli = {"labelled": opts.labelled, "partial_rate": opts.partial_rate, "data_root": opts.data_root,
           "val_size": opts.val_size, "unlabelled_size": opts.unlabelled_size, "val_labels": opts.val_labels,
           "val_from_labelled": opts.val_from_labelled}
    values |= {k: v for k, v in cli.items() if v is not None}
    if not opts.verify_data:
        values["verify_data"] = False
    values |= parse_sets(list(opts.sets), opts.method, space)
    # the search decides on val/acc: the trainer tests the last epoch only, and each trial the
    # best epoch's weights where it may end (ASHA's rungs, the last epoch: tuning.trial.best.BestTestSchedule)
    values.setdefault("eval_test", "end")
    max_epochs = int(pick("max_epochs", S.PAPER_EPOCHS))
    if max_epochs < 1:
        raise ValueError(f"--max-epochs {max_epochs} must be >= 1")
    workers = int(opts.workers_per_trial)
    if workers < 1:
        raise ValueError(f"--workers-per-trial {workers} must be >= 1 (1: single-process trials; N > 1: DDP)")
    gpus = float(pick("gpus_per_trial", default_gpus()))
    cpus = int(pick("cpus_per_trial", default_cpus(gpus)))
    check_resources(cpus, gpus, local=opts.local, workers=workers)
    values |= {"dataset": opts.dataset, "method": opts.method, "epochs": max_epochs,
               "device": "cuda" if gpus > 0 else "cpu", "progress": False, "out": None}
    values["data_root"] = search_data_root(opts.dataset, values.get("data_root"), local=opts.local)
    if values.get("val_size", TrainConfig.val_size) <= 0 and not values.get("val_from_labelled"):
        raise ValueError("--val-size must be > 0 (or --val-from-labelled K > 0): the search optimises a validation "
                         "metric on images it does not train on, never test accuracy")
    cfg = resolve(values)
    metric = check_metric(opts.metric, cfg)
    for point in space.points_to_evaluate():
        resolve({**point, "device": "cpu"}, cfg)  # each first trial's config (GPUs were checked above)
    num_samples = int(pick("num_samples", S.DEFAULT_NUM_SAMPLES))
    if num_samples < 1:
        raise ValueError(f"--num-samples {num_samples} must be >= 1")
    if opts.searcher == "grid":  # every point of the grid once
        size = math.prod(len(v) for v in space.grid().values())
        if opts.num_samples is not None and opts.num_samples != size:
            raise ValueError(f"--searcher grid runs each of the space's {size} points once; drop --num-samples "
                             f"{opts.num_samples}")
        num_samples = size
    grace = _grace_period(opts, space, max_epochs, int(preset.get("grace_margin", S.DEFAULT_GRACE_MARGIN)),
                          dataclasses.asdict(cfg.options))
    reduction = int(pick("reduction_factor", S.DEFAULT_REDUCTION_FACTOR))
    if reduction < 2:
        raise ValueError(f"--reduction-factor {reduction} must be >= 2")
    # a preset's trial count assumes single-process trials; DDP trials get what the resources allow
    max_conc = opts.max_concurrent if workers > 1 else pick("max_concurrent", None)
    if max_conc is not None and int(max_conc) < 1:
        raise ValueError(f"--max-concurrent {max_conc} must be >= 1")
    checksum = check_data(cfg, local=opts.local)
    mlflow_log.check_store(tracking_uri)
    optuna_url = opts.optuna_storage or optuna_study.default_storage(storage.root)
    attrs = study_attrs(opts.method, opts.dataset, metric, S.MODE, max_epochs, cfg)
    if optuna_study.study_exists(optuna_url, name):
        raise ValueError(f"the Optuna storage {optuna_url} already has a study named {name!r}; choose another --name")
    warm = opts.warm_start
    if warm:
        unchecked = optuna_study.check_warm_start(optuna_url, warm, attrs).unchecked
        if unchecked:
            print(f"note: --warm-start {warm}: that study does not record its {', '.join(unchecked)} (it predates "
                  f"the record), so its data protocol is not checked against this search's", flush=True)
    plan = SearchPlan(
        name=name, storage_path=storage.root, storage_endpoint=storage.endpoint, dataset=opts.dataset,
        method=opts.method, space_path=str(space_path),
        num_samples=num_samples, max_epochs=max_epochs, grace_period=grace, reduction_factor=reduction,
        seed=int(opts.seed), cpus_per_trial=cpus, gpus_per_trial=gpus,
        max_concurrent=None if max_conc is None else int(max_conc), tracking_uri=tracking_uri,
        base=cfg, preset=opts.preset, workers_per_trial=workers,
        check_sync=bool(opts.check_sync), git_commit=git_commit(), data_checksum=checksum,
        data_checksum_of="files",
        optuna_storage=optuna_url, warm_start=warm or None, epoch_rule=check_rule(opts.epoch_rule), metric=metric,
        searcher=opts.searcher, scheduler=opts.scheduler,
        # start-up trials on top of the enqueued points (a warm start adds its copies: tuning.cli.search)
        tpe=optuna_study.tpe_settings(num_samples, None if max_conc is None else int(max_conc), int(opts.seed),
                                      seeded=len(space.points_to_evaluate())))
    return plan, space


def copy_space(plan: SearchPlan) -> None:
    """Write the search's space, resolved for its dataset and preset, as one self-contained
    file: a resumed search reads it back even if the space files have changed since."""
    if not plan.storage.exists(plan.name, SPACE_COPY):
        space = load_space(plan.space_path, plan.method, plan.dataset, plan.preset)
        what = f"dataset {plan.dataset}" + (f", preset {plan.preset}" if plan.preset else "")
        plan.storage.write_text(space.to_yaml(f"The space of search {plan.name}: {plan.space_path} resolved for "
                                              f"{what}.\nRead back on resume; format: docs/tuning.md."),
                                plan.name, SPACE_COPY)


def check_budget(space: SearchSpace, max_epochs: int, margin: int, options: dict[str, Any] | None = None) -> None:
    """A trial must run past the latest start epoch the space allows, or what starts there
    (and the parameters that tune it) is never exercised, yet would be reported as best."""
    knob, start = space.latest_start(options)
    if knob is not None and max_epochs <= start:
        what = meta(get_method(space.method).Options, knob).get("starts", knob)  # the knob's ``starts=``
        where = f"reaches {start} in {space.path.name}" if knob in space.params or knob in space.fixed \
            else f"is {start} by default"
        raise ValueError(f"--max-epochs {max_epochs} cannot exercise {knob}: it {where}, so "
                         f"{what} would never run in such a trial; use --max-epochs >= "
                         f"{start + 1} (>= {start + margin} for ASHA's full grace period), or lower {knob}")


def _grace_period(opts: SearchOptions, space: SearchSpace, max_epochs: int, margin: int,
                  options: dict[str, Any] | None = None) -> int:
    start = space.max_start_epoch(options)
    check_budget(space, max_epochs, margin, options)
    if opts.grace_period is not None:
        if opts.grace_period <= start or opts.grace_period > max_epochs:
            raise ValueError(f"--grace-period {opts.grace_period} must exceed the largest warm-up/start epoch of "
                             f"the space ({start}) and be <= --max-epochs {max_epochs}")
        return int(opts.grace_period)
    if start + margin > max_epochs:
        print(f"note: ASHA's grace period is --max-epochs {max_epochs} (the latest start epoch {start} + {margin} "
              f"would exceed it): no trial is stopped early", flush=True)
    return max(1, min(max_epochs, start + margin))


def default_gpus() -> float:
    """GPUs per trial when not given: one where CUDA is available, else none."""
    import torch
    return 1.0 if torch.cuda.is_available() else 0.0


def default_cpus(gpus: float) -> int:
    """CPU threads per trial when not given: one without GPUs, else the cores per GPU."""
    if gpus <= 0:
        return 1
    import torch
    return max(1, (os.cpu_count() or 1) // max(1, torch.cuda.device_count()))
