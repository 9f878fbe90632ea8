"""A grid: fixed configurations (cells) x seeds, every run trained to the full budget
(``tuning/confirm.py``, ``tuning/reproduce.py``; run by ``tuning.driver.grid``).

A grid's plan (``<experiment>/<plan_file>``) holds its cells: per cell the resolved base
config, the values set over it and the MLflow tags of its runs. It is built once by its
command and written once more with its MLflow ids; nothing changes it after that.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spmi.atomic import write_atomic
from spmi.config import TrainConfig, is_resolved, resolve
from tuning.plan.search_plan import LAYOUT_VERSION, check_layout


@dataclass(frozen=True)
class Cell:
    """One fixed configuration: its values over its own (resolved) base, its runs' tags."""

    key: str
    base: TrainConfig
    values: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", dict(self.values))
        object.__setattr__(self, "tags", dict(self.tags))
        if not is_resolved(self.base):
            raise ValueError(f"cell {self.key}: its base config is not resolved")

    def to_dict(self) -> dict[str, Any]:
        return {"base": self.base.to_dict(), "values": dict(self.values), "tags": dict(self.tags)}

    @classmethod
    def from_dict(cls, key: str, data: dict[str, Any]) -> Cell:
        return cls(key, resolve(data["base"]), data.get("values", {}), data.get("tags", {}))


@dataclass(frozen=True)
class TopConfig:
    """A configuration to confirm: the search's ``rank``-th best trial and its values."""

    rank: int
    trial_id: str
    epochs: int
    val_acc: float
    params: dict[str, Any]


@dataclass(frozen=True)
class ConfirmSettings:
    """What a confirmation grid keeps besides its cells: the configurations it confirms."""

    top: tuple[TopConfig, ...]
    epoch_rule: str = "best"   # the search's (tuning.plan.selection): what the confirmation chooses by
    metric: str = "val/acc"    # the search's validation metric

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConfirmSettings:
        return cls(tuple(TopConfig(**c) for c in data["top"]), data.get("epoch_rule", "best"),
                   data.get("metric", "val/acc"))


@dataclass(frozen=True)
class TableCell:
    """A cell of the reproduced table: its row (dataset, l, p), method, configuration source,
    the paper's number (None: not known) and its data protocol in words."""

    key: str
    dataset: str
    labelled: int
    partial_rate: float
    method: str
    config_from: str
    paper: float | None
    protocol: str = ""
    paper_protocol: bool = True  # trains on every training image, as the paper did: comparable with its number


@dataclass(frozen=True)
class SkippedCell:
    """A cell of the table that does not run (its data are absent), and why."""

    dataset: str
    labelled: int
    partial_rate: float
    method: str
    reason: str


@dataclass(frozen=True)
class TableSettings:
    """What the reproduced table keeps besides its cells."""

    datasets: tuple[str, ...]
    methods: tuple[str, ...]
    rows: tuple[tuple[str, int, float], ...]
    skipped: tuple[SkippedCell, ...]
    experiment: str                 # the MLflow experiment of the runs
    cells: tuple[TableCell, ...]

    def cell(self, key: str) -> TableCell:
        return next(c for c in self.cells if c.key == key)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TableSettings:
        return cls(tuple(data["datasets"]), tuple(data["methods"]), tuple(tuple(r) for r in data["rows"]),
                   tuple(SkippedCell(**s) for s in data["skipped"]), data["experiment"],
                   tuple(TableCell(**c) for c in data["cells"]))


SETTINGS = {"confirm": ConfirmSettings, "table": TableSettings}  # GridPlan.extra, by its ``kind`` in JSON


@dataclass(frozen=True)
class GridPlan:
    """Everything a grid run (and its resumption) needs; JSON-serialisable."""

    name: str                # Tune run name: <storage_path>/<name>
    storage_path: str
    plan_file: str
    cells: tuple[Cell, ...]
    seeds: tuple[int, ...]
    epochs: int
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    role: str                # MLflow ``role`` tag of every run
    search: str              # MLflow ``search`` tag of every run
    git_commit: str = "unknown"
    cpus_per_trial: int = 1
    gpus_per_trial: float = 0.0
    workers_per_trial: int = 1
    check_sync: bool = False
    max_concurrent: int | None = None
    command: str = ""
    extra: ConfirmSettings | TableSettings | None = None   # the command's own settings
    version: int = LAYOUT_VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "cells", tuple(self.cells))
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))

    @property
    def metric(self) -> str:
        """The validation metric its runs keep their best epoch by (a confirmation: its search's)."""
        return self.extra.metric if isinstance(self.extra, ConfirmSettings) else "val/acc"

    @property
    def experiment_path(self) -> Path:
        return Path(self.storage_path) / self.name

    @property
    def num_trials(self) -> int:
        return len(self.cells) * len(self.seeds)

    def cell(self, key: str) -> Cell:
        return next(c for c in self.cells if c.key == key)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        kind = next((k for k, cls in SETTINGS.items() if isinstance(self.extra, cls)), None)
        extra = None if self.extra is None else {"kind": kind, **dataclasses.asdict(self.extra)}
        return out | {"cells": {c.key: c.to_dict() for c in self.cells}, "seeds": list(self.seeds), "extra": extra}

    def save(self) -> Path:
        text = json.dumps(self.to_dict(), indent=2)
        return write_atomic(self.experiment_path / self.plan_file, lambda f: f.write(text), "w")


def load_grid(path: Path, resuming: bool = False) -> GridPlan:
    """The grid plan at ``path``; ``resuming``: one from another layout of tuning/ is refused
    (ValueError, one line), its saved Tune state would not load."""
    data = json.loads(Path(path).read_text())
    if resuming:
        check_layout(data.get("version", 1), Path(path).parent, "grid")
    data["cells"] = tuple(Cell.from_dict(key, cell) for key, cell in data["cells"].items())
    extra = data.get("extra")
    data["extra"] = None if not extra else SETTINGS[extra["kind"]].from_dict(extra)
    data.setdefault("version", 1)
    return GridPlan(**data)
