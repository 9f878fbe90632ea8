"""One run of the learning-curve table: train one (configuration, seed) with the project's
trainer and turn its epochs into table rows (``COLUMNS``), written as one part file.

The trainer is ``spmi.trainer.Trainer`` on a config made by ``spmi.config.resolve``; no Ray.
The test set is evaluated every epoch (``eval_test="every"``) whatever a search would do.
A run that diverges (``spmi.trainer.Diverged``) ends with one row whose ``diverged`` is
true: its metrics are NaN, its loss the non-finite value, its time and work as far as the
epoch got. ``work/*`` counts the images through the network per epoch (SPMI's schedule:
labelled images every step, unlabelled ones and the label-channel pass from T_w on), so a
simulator can price an epoch on another machine.
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from spmi.atomic import write_atomic
from spmi.config import resolve
from spmi.data import ImageData, load_dataset
from spmi.trainer import Diverged, Trainer

# the fixed columns after the varied settings: (name, arrow type, meaning)
COLUMNS: tuple[tuple[str, pa.DataType, str], ...] = (
    ("labelled", pa.int64(), "l, the partially labelled images trained on"),
    ("unlabelled_size", pa.int64(), "N_u, the unlabelled images trained on"),
    ("seed", pa.int64(), "the run's seed (split, candidate sets, initialisation, sampling)"),
    ("epoch", pa.int64(), "1-based epoch"),
    ("epoch_lr", pa.float64(), "the cosine schedule's learning rate in this epoch"),
    ("val/acc", pa.float64(), "accuracy on the held-out validation images (true labels: the oracle)"),
    ("val/covering_rate", pa.float64(), "share of validation predictions inside the image's candidate set"),
    ("val/approx_acc", pa.float64(), "approximated accuracy from the validation candidate sets (PLENCH)"),
    ("test/acc", pa.float64(), "accuracy on the whole test set, every epoch"),
    ("loss/total", pa.float64(), "mean training loss of the epoch"),
    ("loss/lab", pa.float64(), "its labelled part"),
    ("loss/unl", pa.float64(), "its unlabelled part (NaN before T_w)"),
    ("cand/lab_size", pa.float64(), "mean candidate-set size of the labelled images"),
    ("cand/lab_coverage", pa.float64(), "share of labelled candidate sets holding the true label"),
    ("cand/unl_size", pa.float64(), "mean candidate-set size of the unlabelled images (NaN before T_w)"),
    ("cand/unl_coverage", pa.float64(), "share of unlabelled candidate sets holding the true label"),
    ("cand/unl_trained", pa.float64(), "share of unlabelled images the loss uses"),
    ("diverged", pa.bool_(), "the training loss became non-finite in this epoch (the run's last row)"),
    ("seconds", pa.float64(), "measured wall seconds of the epoch (label channel + steps + evaluation)"),
    ("time/label_channel", pa.float64(), "of which the label-channel pass"),
    ("time/train", pa.float64(), "of which the training steps"),
    ("time/eval", pa.float64(), "of which validation and test evaluation"),
    ("cpu_seconds", pa.float64(), "process CPU seconds of the epoch (less load-sensitive than seconds)"),
    ("work/train_images", pa.int64(), "images through forward and backward in the training steps"),
    ("work/pass_images", pa.int64(), "images through the forward pass of the label channel"),
    ("work/val_images", pa.int64(), "validation images evaluated (forward)"),
    ("work/test_images", pa.int64(), "test images evaluated (forward)"),
)
# record key of the trainer -> column, where they differ
RENAMED = {"lr": "epoch_lr"}
PART_META_KEY = b"spmi_curves_run"


@dataclass(frozen=True)
class RunTask:
    """What a worker needs for one run: the common settings, the configuration, the seed,
    where its part goes, and how to find the data."""

    base: dict[str, Any]
    config: dict[str, Any]
    seed: int
    part: str
    data_root: str | None = None
    verify_data: bool = True
    provenance: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class RunResult:
    part: str
    rows: int
    diverged: bool
    cpu_seconds: float
    wall_seconds: float


def arrow_type(value: Any) -> pa.DataType:
    """The column type of a varied setting's value."""
    if isinstance(value, bool):
        return pa.bool_()
    if isinstance(value, int):
        return pa.int64()
    if isinstance(value, float):
        return pa.float64()
    return pa.string()


def schema(config: dict[str, Any]) -> pa.Schema:
    """The varied settings (in the configuration's order), then ``COLUMNS``."""
    return pa.schema([pa.field(k, arrow_type(v)) for k, v in config.items()]
                     + [pa.field(name, tp) for name, tp, _ in COLUMNS])


def epoch_work(trainer: Trainer, epoch: int, steps_done: int | None = None, evaluated: bool = True) -> dict[str, int]:
    """Images through the network in 0-based ``epoch`` (``steps_done`` of the epoch's steps,
    all when None; nothing evaluated when not ``evaluated``): SPMI trains on B labelled
    images per step, B unlabelled ones too from T_w on, when the label channel also passes
    over the labelled and unlabelled sets once."""
    steps = trainer.steps_per_epoch if steps_done is None else steps_done
    started = epoch >= trainer.method.opts.warmup
    batch = trainer.cfg.batch_size
    return {
        "work/train_images": steps * batch * (2 if started else 1),
        "work/pass_images": len(trainer.lab_idx) + len(trainer.unl_idx) if started else 0,
        "work/val_images": sum(len(e.idx) for e in trainer.eval_sets.values()) if evaluated else 0,
        "work/test_images": len(trainer.test_y) if evaluated else 0,
    }


class RowRecorder:
    """A trainer callback that turns each epoch's record into a table row."""

    def __init__(self, config: dict[str, Any], labelled: int, unlabelled: int, seed: int):
        self.fixed = {**config, "labelled": labelled, "unlabelled_size": unlabelled, "seed": seed}
        self.rows: list[dict[str, Any]] = []
        self.mark()

    def mark(self) -> None:
        self.cpu, self.wall = time.process_time(), time.perf_counter()

    def __call__(self, metrics: dict[str, Any], trainer: Trainer) -> None:
        row = {**self.fixed, "epoch": metrics["epoch"] + 1, "diverged": False,
               "cpu_seconds": time.process_time() - self.cpu}
        for name, _, _ in COLUMNS:
            key = next((k for k, v in RENAMED.items() if v == name), name)
            if name not in row:
                row[name] = metrics.get(key, math.nan)
        row |= epoch_work(trainer, metrics["epoch"])
        self.rows.append(row)
        self.mark()

    def diverged(self, err: Diverged, trainer: Trainer) -> None:
        """The row of the epoch in which the loss became non-finite."""
        row = {**self.fixed, "epoch": err.epoch + 1, "diverged": True,
               "cpu_seconds": time.process_time() - self.cpu, "seconds": time.perf_counter() - self.wall}
        for name, _, _ in COLUMNS:
            row.setdefault(name, math.nan)
        row["loss/total"] = err.value
        row["epoch_lr"] = trainer.optimizer.param_groups[0]["lr"]
        steps = None if err.step is None else err.step + 1
        row |= epoch_work(trainer, err.epoch, steps, evaluated=False)
        self.rows.append(row)


_DATA: dict[tuple[str, str | None, bool], ImageData] = {}


def dataset(name: str, root: str | None, verify: bool) -> ImageData:
    """The dataset, loaded once per process."""
    key = (name, root, verify)
    if key not in _DATA:
        _DATA[key] = load_dataset(name, root, verify=verify)
    return _DATA[key]


def train_rows(task: RunTask, data: ImageData | None = None) -> tuple[list[dict[str, Any]], RunResult]:
    """Train ``task``'s run; its rows and a summary (its part is not written)."""
    cpu0, wall0 = time.process_time(), time.perf_counter()
    cfg = resolve({**task.base, **task.config, "seed": task.seed, "out": None, "progress": False})
    data = data if data is not None else dataset(cfg.dataset, task.data_root, task.verify_data)
    trainer = Trainer(cfg, data)
    recorder = RowRecorder(task.config, len(trainer.lab_idx), len(trainer.unl_idx), task.seed)
    trainer.callbacks.append(recorder)
    diverged = False
    try:
        trainer.fit()
    except Diverged as err:
        recorder.diverged(err, trainer)
        diverged = True
    result = RunResult(task.part, len(recorder.rows), diverged, time.process_time() - cpu0,
                       time.perf_counter() - wall0)
    return recorder.rows, result


def rows_table(rows: list[dict[str, Any]], config: dict[str, Any], meta: dict[str, Any]) -> pa.Table:
    """The rows as an arrow table of ``schema(config)``, with ``meta`` as JSON in its metadata."""
    sch = schema(config)
    table = pa.Table.from_pylist(rows, schema=sch)
    return table.replace_schema_metadata({PART_META_KEY: json.dumps(meta, sort_keys=True).encode()})


def run_part(task: RunTask, data: ImageData | None = None) -> RunResult:
    """Train ``task``'s run and write its part file atomically (what a worker process does)."""
    rows, result = train_rows(task, data)
    meta = {**task.provenance, "config": task.config, "seed": task.seed, "rows": result.rows,
            "diverged": result.diverged, "cpu_seconds": result.cpu_seconds, "wall_seconds": result.wall_seconds,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": platform.node(),
            "torch_threads": torch.get_num_threads()}
    table = rows_table(rows, task.config, meta)
    write_atomic(Path(task.part), lambda f: pq.write_table(table, f))
    return result


def read_part_meta(path: str | Path) -> dict[str, Any]:
    """The run summary stored in a part file's metadata."""
    raw = pq.read_schema(path).metadata or {}
    return json.loads(raw[PART_META_KEY]) if PART_META_KEY in raw else {}
