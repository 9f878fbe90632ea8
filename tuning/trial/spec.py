"""The trial spec: everything a trial receives from the driver besides its searched values
(Tune's ``config``), as one frozen, typed, versioned value. The driver builds and checks
it once (``tuning.driver``); every trial, single-process or DDP, of a search or a grid,
runs it (``tuning.trial.trainable``). It pickles (``tune.with_parameters``) and writes
to and reads from JSON (``to_json``/``from_json``); a spec of another version is refused.

A search's spec holds the resolved base config, and a trial's config is its searched
values over it. A grid's spec (confirm, reproduce) holds its cells instead, and a trial's
config names a cell and a seed: ``point`` turns either into the trial's TrainConfig.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from spmi.config import TrainConfig, is_resolved, resolve
from tuning.plan.grid_plan import Cell

SPEC_VERSION = 2  # 1: the previous layout's ``base`` and ``meta`` dicts (no spec)
BACKENDS = ("trainer",)  # what produces a trial's epochs (tuning.trial.backend)


def _copy(mapping: Mapping[str, Any] | None) -> dict[str, Any]:
    """A copy the spec owns (plain dicts pickle; the spec never changes them)."""
    return dict(mapping or {})


@dataclass(frozen=True)
class Tracking:
    """Where and how a trial records itself in MLflow."""

    uri: str
    experiment_id: str
    parent_run_id: str
    search: str              # the ``search`` tag: the search's (or grid's) name
    git_commit: str = "unknown"
    role: str = "trial"      # the ``role`` tag: trial, confirm, reproduce


@dataclass(frozen=True)
class Resources:
    """What one trial process (one worker with ``workers`` > 1) holds."""

    cpus: int                # CPU threads
    gpus: float              # GPUs (whole ones per worker with DDP)
    workers: int = 1         # > 1: a Ray Train DDP run of that many workers
    check_sync: bool = False  # DDP: check after every epoch that all ranks hold the same state

    def __post_init__(self) -> None:
        if self.workers < 1 or self.cpus < 1 or self.gpus < 0:
            raise ValueError(f"trial resources {self} out of range")
        if self.workers > 1 and self.gpus != int(self.gpus):
            raise ValueError(f"DDP workers need whole GPUs, got {self.gpus}")


@dataclass(frozen=True)
class Location:
    """The experiment's folder: ``<root>/<experiment>`` (a local folder or a URI)."""

    root: str
    experiment: str
    endpoint: str | None = None  # S3-compatible endpoint of an s3:// root


@dataclass(frozen=True)
class Point:
    """One trial's place: its config, the names set over the base (the ``searched`` tag) and
    the extra tags of its MLflow run."""

    config: TrainConfig
    searched: tuple[str, ...]
    tags: Mapping[str, Any]


@dataclass(frozen=True)
class TrialSpec:
    """All a trial receives from the driver (module docstring). Either ``base`` (a search)
    or ``cells`` (a grid)."""

    tracking: Tracking
    resources: Resources
    location: Location
    base: TrainConfig | None = None
    cells: tuple[Cell, ...] = ()
    data_checksum: str = ""   # of the data the driver checked ('' for grids: several datasets)
    data_checksum_of: str = "files"  # what it sums: "files", or "arrays" (a search started before files sums)
    test_epochs: tuple[int, ...] = ()  # ASHA's rungs: where the best weights' test accuracy is measured
    metric: str = "val/acc"   # the search's objective: the best epoch (the network kept) is by it
    backend: str = "trainer"
    version: int = SPEC_VERSION

    def __post_init__(self) -> None:
        if self.version != SPEC_VERSION:
            raise ValueError(f"a trial spec of version {self.version}; this code runs version {SPEC_VERSION}")
        if (self.base is None) == (not self.cells):
            raise ValueError("a trial spec holds either a base config (a search) or cells (a grid)")
        if self.base is not None and not is_resolved(self.base):
            raise ValueError("the trial spec's base config is not resolved")
        if len({c.key for c in self.cells}) != len(self.cells):
            raise ValueError("the grid's cells have repeated keys")
        if self.data_checksum_of not in ("files", "arrays"):
            raise ValueError(f"data_checksum_of {self.data_checksum_of!r}: 'files' or 'arrays'")
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown trial backend {self.backend!r}; choose one of: {', '.join(BACKENDS)}")

    def cell(self, key: str) -> Cell:
        return next(c for c in self.cells if c.key == key)

    def point(self, config: Mapping[str, Any]) -> Point:
        """The trial's config from Tune's ``config``: a search's searched values over the base,
        or a grid's ``{"cell": key, "seed": s}``; resolved and checked."""
        if self.base is not None:
            return Point(resolve(dict(config), self.base), tuple(config), _copy({}))
        cell = self.cell(config["cell"])
        seed = int(config["seed"])
        values = {**cell.values, "seed": seed}
        return Point(resolve(values, cell.base), tuple(values),
                     _copy({**cell.tags, "cell": cell.key, "seed": seed}))

    # ------------------------------------------------------------ JSON

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "tracking": dataclasses.asdict(self.tracking),
                "resources": dataclasses.asdict(self.resources), "location": dataclasses.asdict(self.location),
                "base": None if self.base is None else self.base.to_dict(),
                "cells": {c.key: c.to_dict() for c in self.cells},
                "data_checksum": self.data_checksum, "data_checksum_of": self.data_checksum_of,
                "test_epochs": list(self.test_epochs), "metric": self.metric, "backend": self.backend}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrialSpec:
        version = data.get("version", 1)
        if version != SPEC_VERSION:
            raise ValueError(f"a trial spec of version {version}, written by another layout of tuning/; this code "
                             f"reads version {SPEC_VERSION}")
        return cls(tracking=Tracking(**data["tracking"]), resources=Resources(**data["resources"]),
                   location=Location(**data["location"]),
                   base=None if data["base"] is None else resolve(data["base"]),
                   cells=tuple(Cell.from_dict(key, c) for key, c in data["cells"].items()),
                   data_checksum=data["data_checksum"], data_checksum_of=data["data_checksum_of"],
                   test_epochs=tuple(int(e) for e in data["test_epochs"]), metric=data["metric"],
                   backend=data["backend"])

    @classmethod
    def from_json(cls, text: str) -> TrialSpec:
        return cls.from_dict(json.loads(text))
