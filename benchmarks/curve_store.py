"""Where a learning-curve table lives while it is built, and the table it becomes.

``<root>/<name>/build.json`` holds the table's spec (fixed when the build starts: a later
build with other settings is refused) and its provenance: one entry per build session
(command, git commit, machine, CPU model and flags, torch version, dates, runs) and CPU
hours so far. ``<root>/<name>/parts/<config-hash>-s<seed>.parquet`` holds one finished
run each, written atomically, with the run's own provenance in its metadata: a part exists
whole or not at all, so a build resumes by skipping the parts it finds. ``assemble``
concatenates the parts into ``<root>/<name>.parquet`` and writes its sidecar
``<root>/<name>.json`` (spec, provenance, schema, SHA-256 of the table file).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import os
import platform
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from benchmarks.curve_run import COLUMNS, read_part_meta, schema
from spmi.atomic import write_atomic

BUILD_NAME, PARTS_NAME, MEASURE_NAME = "build.json", "parts", "measure.json"
TABLE_META_KEY = b"spmi_curves_table"
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class TableSpec:
    """What a table holds. ``grid``: the varied settings (field names of TrainConfig or of
    SPMI's options) and their values, full factorial in this order; ``base``: every other
    setting given (flat, as ``spmi.config.resolve`` takes it); each configuration runs
    ``seeds``, and the ``top`` configurations by mean final ``top_metric`` over those seeds
    also run ``top_seeds`` once every configuration has its ``seeds``."""

    name: str
    grid: dict[str, list[Any]]
    base: dict[str, Any]
    seeds: list[int]
    top: int
    top_seeds: list[int]
    top_metric: str
    data_checksum: str
    test_table: bool = False
    schema_version: int = SCHEMA_VERSION

    def configs(self) -> list[dict[str, Any]]:
        """Every combination of the grid's values, in grid order."""
        keys = list(self.grid)
        return [dict(zip(keys, values, strict=True)) for values in itertools.product(*self.grid.values())]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TableSpec:
        return cls(**d)


def config_key(config: dict[str, Any]) -> str:
    """12 hex digits naming a configuration (SHA-1 of its sorted JSON)."""
    return hashlib.sha1(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]


class TableFolder:
    """The build folder of table ``name`` under ``root``."""

    def __init__(self, root: str | Path, name: str):
        self.root, self.name = Path(root), name
        self.dir = self.root / name
        self.parts = self.dir / PARTS_NAME
        self.build_file = self.dir / BUILD_NAME
        self.table_file = self.root / f"{name}.parquet"
        self.sidecar = self.root / f"{name}.json"

    def part(self, config: dict[str, Any], seed: int) -> Path:
        return self.parts / f"{config_key(config)}-s{seed}.parquet"

    def done(self) -> set[str]:
        """File names of the finished parts (temporary files of killed writes are not parts)."""
        if not self.parts.is_dir():
            return set()
        return {p.name for p in self.parts.iterdir() if p.suffix == ".parquet" and not p.name.startswith(".")}

    def clean_temporary(self) -> int:
        """Remove what killed writes left (``.NAME.*.tmp``); how many."""
        if not self.parts.is_dir():
            return 0
        stale = [p for p in self.parts.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]
        for p in stale:
            p.unlink(missing_ok=True)
        return len(stale)

    def read_build(self) -> dict[str, Any] | None:
        return json.loads(self.build_file.read_text()) if self.build_file.exists() else None

    def write_build(self, build: dict[str, Any]) -> None:
        text = json.dumps(build, indent=1, sort_keys=False) + "\n"
        write_atomic(self.build_file, lambda f: f.write(text), "w")

    def spec(self) -> TableSpec:
        build = self.read_build()
        if build is None:
            raise ValueError(f"no table build in {self.dir}: start one with benchmarks/curves.py (same --name)")
        return TableSpec.from_dict(build["spec"])


def check_same_spec(saved: TableSpec, spec: TableSpec, folder: Path) -> None:
    """A build continues only the table it started (one line naming what differs)."""
    a, b = saved.to_dict(), spec.to_dict()
    differ = [k for k in a.keys() | b.keys() if a.get(k) != b.get(k)]
    if differ:
        detail = "; ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(differ))
        raise ValueError(f"{folder} holds a table built with other settings ({detail}); "
                         f"resume it with its own settings, or give another --name")


# ---------------------------------------------------------------- which runs


def read_final_scores(folder: TableFolder, spec: TableSpec, seeds: list[int]) -> dict[str, list[float]]:
    """Per configuration key, the last row's ``top_metric`` of each finished run among
    ``seeds`` (NaN for a run that diverged)."""
    out: dict[str, list[float]] = {}
    for config in spec.configs():
        for seed in seeds:
            path = folder.part(config, seed)
            if path.exists():
                column = pq.read_table(path, columns=[spec.top_metric, "diverged"]).to_pydict()
                last = column[spec.top_metric][-1] if column[spec.top_metric] else math.nan
                value = math.nan if column["diverged"] and column["diverged"][-1] else last
                out.setdefault(config_key(config), []).append(math.nan if value is None else value)
    return out


def top_configs(spec: TableSpec, scores: dict[str, list[float]]) -> list[dict[str, Any]]:
    """The ``spec.top`` configurations with the highest mean score over their seeds, in
    grid order among equals; a configuration with a NaN score (a diverged run) ranks last."""
    configs = spec.configs()

    def mean(config: dict[str, Any]) -> float:
        values = scores.get(config_key(config), [])
        m = sum(values) / len(values) if values else math.nan
        return -math.inf if math.isnan(m) else m

    order = sorted(range(len(configs)), key=lambda i: (-mean(configs[i]), i))
    return [configs[i] for i in order[: spec.top]]


@dataclass(frozen=True)
class Plan:
    """The runs of a table: the first pass (every configuration x ``seeds``), and the
    extra seeds of the top configurations (None until the first pass is complete)."""

    first: list[tuple[dict[str, Any], int]]
    extra: list[tuple[dict[str, Any], int]] | None
    n_extra: int

    @property
    def total(self) -> int:
        return len(self.first) + self.n_extra

    def runs(self) -> list[tuple[dict[str, Any], int]]:
        return self.first + (self.extra or [])


def plan(folder: TableFolder, spec: TableSpec) -> Plan:
    """The table's runs as far as they can be known from the finished parts."""
    first = [(c, s) for c in spec.configs() for s in spec.seeds]
    n_extra = min(spec.top, len(spec.configs())) * len(spec.top_seeds)
    done = folder.done()
    if n_extra == 0 or not all(folder.part(c, s).name in done for c, s in first):
        return Plan(first, [] if n_extra == 0 else None, n_extra)
    top = top_configs(spec, read_final_scores(folder, spec, spec.seeds))
    return Plan(first, [(c, s) for c in top for s in spec.top_seeds], n_extra)


# ---------------------------------------------------------------- provenance


def git(args: list[str], cwd: Path) -> str:
    """``git ARGS`` in ``cwd``; its stdout (CalledProcessError with stderr on failure)."""
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def git_state(cwd: Path) -> dict[str, Any]:
    """The commit the code runs at and whether the working tree differs from it."""
    try:
        commit = git(["rev-parse", "HEAD"], cwd)
        dirty = bool(git(["status", "--porcelain", "--untracked-files=no", "--", "spmi", "benchmarks"], cwd))
        return {"commit": commit, "dirty": dirty}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}


def cpu_info() -> dict[str, Any]:
    """The CPU's model name and flags (``/proc/cpuinfo``), and the cores this process may use."""
    model, flags = platform.processor() or platform.machine(), []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model in ("", platform.machine(), platform.processor()):
                model = value.strip()
            elif key.strip() in ("flags", "Features") and not flags:
                flags = value.split()
    except OSError:
        pass
    return {"cpu_model": model, "cpu_flags": " ".join(flags), "cores": len(os.sched_getaffinity(0)),
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability()}


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def session_entry(device: str) -> dict[str, Any]:
    """This build session's provenance: command, code, machine, software, start date."""
    repo = Path(__file__).resolve().parent.parent
    entry = {"command": " ".join([Path(sys.executable).name, *sys.argv]), **git_state(repo),
             "host": socket.gethostname(), **cpu_info(), "device": device,
             "torch": torch.__version__, "python": platform.python_version(), "started": now(), "ended": None,
             "runs": 0, "cpu_hours": 0.0}
    if device.startswith("cuda") and torch.cuda.is_available():
        entry["gpu"] = torch.cuda.get_device_name(0)
    return entry


def part_metas(folder: TableFolder) -> list[dict[str, Any]]:
    return [read_part_meta(folder.parts / name) for name in sorted(folder.done())]


def cpu_hours(folder: TableFolder) -> float:
    """CPU hours of the finished runs (each part's process CPU time)."""
    return sum(m.get("cpu_seconds", 0.0) for m in part_metas(folder)) / 3600


# ---------------------------------------------------------------- cost


def epoch_costs(folder: TableFolder) -> dict[str, float] | None:
    """Mean CPU seconds of a warm-up epoch and of a label-channel epoch, from the finished
    parts, else from ``measure.json``; None when neither exists."""
    sums = {"warmup": [0.0, 0], "spmi": [0.0, 0]}
    for name in sorted(folder.done()):
        t = pq.read_table(folder.parts / name, columns=["warmup", "epoch", "cpu_seconds", "diverged"]).to_pydict()
        for w, e, c, d in zip(t["warmup"], t["epoch"], t["cpu_seconds"], t["diverged"], strict=True):
            if not d:
                phase = sums["warmup" if e <= w else "spmi"]
                phase[0] += c
                phase[1] += 1
    if sums["warmup"][1] and sums["spmi"][1]:
        return {k: v[0] / v[1] for k, v in sums.items()}
    measure = folder.dir / MEASURE_NAME
    if measure.exists():
        m = json.loads(measure.read_text())
        return {"warmup": m["warmup_epoch_cpu_seconds"], "spmi": m["spmi_epoch_cpu_seconds"]}
    return None


def run_cpu_seconds(config: dict[str, Any], epochs: int, costs: dict[str, float]) -> float:
    """Projected CPU seconds of one run: T_w warm-up epochs, then label-channel epochs."""
    warm = min(int(config.get("warmup", 0)), epochs)
    return warm * costs["warmup"] + (epochs - warm) * costs["spmi"]


def projected_cpu_hours(spec: TableSpec, costs: dict[str, float], runs: list[tuple[dict[str, Any], int]] | None = None,
                        extra: int | None = None) -> float:
    """CPU hours of ``runs`` (all the table's first-pass runs when None) plus ``extra``
    top-configuration runs (priced as the grid's mean run; all of them when None)."""
    epochs = int(spec.base["epochs"])
    first = runs if runs is not None else [(c, s) for c in spec.configs() for s in spec.seeds]
    configs = spec.configs()
    mean_run = sum(run_cpu_seconds(c, epochs, costs) for c in configs) / len(configs)
    n_extra = min(spec.top, len(configs)) * len(spec.top_seeds) if extra is None else extra
    return (sum(run_cpu_seconds(c, epochs, costs) for c, _ in first) + n_extra * mean_run) / 3600


# ---------------------------------------------------------------- the table


def column_docs(spec: TableSpec) -> dict[str, str]:
    docs = {k: f"varied setting ({', '.join(map(str, v))})" for k, v in spec.grid.items()}
    return docs | {name: meaning for name, _, meaning in COLUMNS}


def assemble(folder: TableFolder, allow_incomplete: bool = False) -> dict[str, Any]:
    """Concatenate the parts (grid order, then seed) into the table file and write its
    sidecar with the file's SHA-256; returns the sidecar. ValueError when runs are missing
    unless ``allow_incomplete`` (the sidecar then says ``complete: false``)."""
    spec = folder.spec()
    p = plan(folder, spec)
    done = folder.done()
    order = {config_key(c): i for i, c in enumerate(spec.configs())}
    present = sorted(((c, s) for c, s in p.runs() if folder.part(c, s).name in done),
                     key=lambda cs: (order[config_key(cs[0])], cs[1]))
    complete = p.extra is not None and len(present) == p.total
    if not complete and not allow_incomplete:
        raise ValueError(f"table {spec.name} has {len(present)} of {p.total} runs; finish the build, or add "
                         f"--allow-incomplete to assemble what exists")
    if not present:
        raise ValueError(f"table {spec.name} has no finished runs yet")
    sch = schema(spec.configs()[0])
    tables = [pq.read_table(folder.part(c, s)).replace_schema_metadata(None).cast(sch) for c, s in present]
    table = pa.concat_tables(tables)
    build = folder.read_build() or {}
    sidecar = {
        "table": f"{spec.name}.parquet", "test_table": spec.test_table, "complete": complete,
        "rows": table.num_rows, "runs": len(present), "runs_planned": p.total,
        "configurations": len(spec.configs()), "epochs": int(spec.base["epochs"]),
        "spec": spec.to_dict(), "columns": column_docs(spec),
        "resolved_config": build.get("resolved_config"),
        "cpu_hours": round(sum(read_part_meta(folder.part(c, s)).get("cpu_seconds", 0.0) for c, s in present) / 3600,
                           3),
        "sessions": build.get("sessions", []), "assembled": now(),
    }
    meta = {k: v for k, v in sidecar.items() if k not in ("sessions", "assembled")}
    table = table.replace_schema_metadata({TABLE_META_KEY: json.dumps(meta, sort_keys=True).encode()})
    write_atomic(folder.table_file, lambda f: pq.write_table(table, f))
    sidecar["sha256"] = hashlib.sha256(folder.table_file.read_bytes()).hexdigest()
    text = json.dumps(sidecar, indent=1) + "\n"
    write_atomic(folder.sidecar, lambda f: f.write(text), "w")
    return sidecar


# ---------------------------------------------------------------- committing


def commit_paths(paths: list[Path], message: str) -> bool:
    """``git add`` and commit exactly ``paths`` (nothing else that is staged); False when
    they hold no change. CalledProcessError (with git's message) on failure."""
    paths = [p.resolve() for p in paths if p.exists()]
    if not paths:
        return False
    cwd = paths[0].parent
    top = Path(git(["rev-parse", "--show-toplevel"], cwd))
    rel = [str(p.relative_to(top)) for p in paths]
    git(["add", "--", *rel], top)
    if not git(["status", "--porcelain", "--", *rel], top):
        return False
    git(["commit", "--quiet", "-m", message, "--only", "--", *rel], top)
    return True
