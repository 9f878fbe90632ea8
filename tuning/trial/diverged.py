"""The divergence marker: a trial whose loss became non-finite writes ``diverged.json`` in
its folder, so that Tune's retry of it does not train again and the report calls it
``diverged`` (no torch here: the report reads it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DIVERGED_FILE = "diverged.json"


class TrialDiverged(RuntimeError):
    """Raised by a trial whose loss became non-finite: Tune ends it as ERROR (Optuna: FAIL),
    its MLflow run is FAILED with the ``diverged`` tag, and a retry of it does not train."""


def diverged_record(trial_dir: str | Path) -> dict[str, Any] | None:
    """What ``mark_diverged`` wrote in the trial's folder, or None."""
    path = Path(trial_dir) / DIVERGED_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def mark_diverged(trial_dir: str | Path, epoch: int, message: str) -> None:
    """Mark the trial diverged in epoch ``epoch`` (1-based)."""
    Path(trial_dir).mkdir(parents=True, exist_ok=True)
    (Path(trial_dir) / DIVERGED_FILE).write_text(json.dumps({"epoch": epoch, "message": message}))
