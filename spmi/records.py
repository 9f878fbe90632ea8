"""Per-epoch metric records: one JSON line per epoch, and a short console summary."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class JsonlWriter:
    """A callback appending each epoch's metrics to ``path``. On resume, records of the
    epochs about to be re-run are dropped first, so the file holds each epoch once."""

    def __init__(self, path: str | Path, start_epoch: int = 0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = [line for line in read_jsonl(self.path) if line["epoch"] < start_epoch] if start_epoch else []
        self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))

    def __call__(self, metrics: dict[str, Any], trainer: Any = None) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({k: _clean(v) for k, v in metrics.items()}) + "\n")


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def summary_line(m: dict[str, Any], epochs: int) -> str:
    parts = [f"epoch {m['epoch'] + 1}/{epochs}", f"lr {m['lr']:.4f}", f"loss {m.get('loss/total', float('nan')):.4f}"]
    for key, label in (("val/acc", "val"), ("test/acc", "test")):
        if key in m:
            parts.append(f"{label} {m[key]:.4f}")
    for key, label in (("cand/lab_size", "|S_l|"), ("cand/lab_coverage", "cov_l"),
                       ("cand/unl_size", "|S_u|"), ("cand/unl_coverage", "cov_u"),
                       ("fixmatch/mask_rate", "mask"), ("fixmatch/pseudo_acc", "pl_acc")):
        if key in m:
            parts.append(f"{label} {m[key]:.3f}")
    parts.append(f"{m['seconds']:.1f}s")
    return "  ".join(parts)
