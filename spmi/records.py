"""Per-epoch metric records: one JSON line per epoch, and a short console summary."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from spmi.atomic import write_atomic


def _clean(value: Any) -> Any:
    """Non-finite floats (also inside lists and dicts) become null: records are strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value


def record_line(metrics: dict[str, Any]) -> str:
    """One strict-JSON line (no bare NaN/Infinity)."""
    return json.dumps(_clean(metrics), allow_nan=False) + "\n"


def replace_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (a temporary file renamed into place)."""
    write_atomic(path, lambda f: f.write(text), "w")


class JsonlWriter:
    """A callback appending each epoch's metrics to ``path``. On resume (``start_epoch``:
    the checkpoint's epoch) the records of the epochs about to be re-run are dropped first,
    atomically, so the file holds each epoch once; earlier records are never rewritten.
    (Guarding a folder that holds another run is the caller's job: ``spmi.train``.)"""

    def __init__(self, path: str | Path, start_epoch: int = 0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = "".join(record_line(r) for r in read_jsonl(self.path) if r["epoch"] < start_epoch)
        if not self.path.exists() or self.path.read_text() != text:
            replace_text(self.path, text)

    def __call__(self, metrics: dict[str, Any], trainer: Any = None) -> None:
        with self.path.open("a") as f:
            f.write(record_line(metrics))
            f.flush()


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The records of ``path``; a last line cut short (a kill during the write) is dropped."""
    path = Path(path)
    if not path.exists():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    rows = []
    for i, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except ValueError:
            if i < len(lines) - 1:
                raise
    return rows


def summary_line(m: dict[str, Any], epochs: int) -> str:
    parts = [f"epoch {m['epoch'] + 1}/{epochs}", f"lr {m['lr']:.4f}", f"loss {m.get('loss/total', float('nan')):.4f}"]
    for key, label in (("val/acc", "val"), ("val/approx_acc", "apx"), ("holdout/acc", "holdout"),
                       ("test/acc", "test")):
        if key in m:
            parts.append(f"{label} {m[key]:.4f}")
    for key, label in (("cand/lab_size", "|S_l|"), ("cand/lab_coverage", "cov_l"),
                       ("cand/unl_size", "|S_u|"), ("cand/unl_coverage", "cov_u"),
                       ("fixmatch/mask_rate", "mask"), ("fixmatch/pseudo_acc", "pl_acc")):
        if key in m:
            parts.append(f"{label} {m[key]:.3f}")
    parts.append(f"{m['seconds']:.1f}s")
    return "  ".join(parts)
