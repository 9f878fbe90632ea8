"""Reading a search's trials back from its experiment folder: one row per trial (status,
searched values, final accuracies) and every epoch's metrics."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tuning.settings import METRIC, TIME_ATTR

DIVERGED_FILE = "diverged.json"  # tuning.trainable.DIVERGED_FILE (not imported: no torch here)

TEST_METRIC = "test/acc"


@dataclass
class Trials:
    table: pd.DataFrame     # one row per trial
    history: pd.DataFrame   # one row per trial and epoch

    def completed(self) -> pd.DataFrame:
        """Trials with a validation accuracy that ended well (finished or stopped by ASHA):
        a failed or diverged trial's last accuracy is no result."""
        if self.table.empty:
            return self.table
        return self.table[self.table["val_acc"].notna() & self.table["status"].isin(["finished", "stopped"])]

    def best(self) -> pd.Series | None:
        """The trial with the highest val/acc at its best epoch, the network it keeps (ties:
        more epochs)."""
        done = self.completed()
        if done.empty:
            return None
        return done.sort_values(["best_val_acc", "epochs"], ascending=False).iloc[0]


def _history(trial_dir: Path, trial_id: str) -> pd.DataFrame:
    path = trial_dir / "result.json"
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                record.pop("config", None)
                rows.append({k: v for k, v in record.items() if not isinstance(v, dict | list)})
    frame = pd.DataFrame(rows)
    if frame.empty or TIME_ATTR not in frame:
        return pd.DataFrame()
    frame["trial_id"] = trial_id
    # a resumed trial may repeat epochs done after its last saved checkpoint: keep the latest
    return frame.drop_duplicates(TIME_ATTR, keep="last").sort_values(TIME_ATTR)


def best_epoch(hist: pd.DataFrame) -> dict[str, float | int | None]:
    """The first epoch of highest val/acc: its val/acc, test/acc and number (as the trial's
    ``tuning.best.BestEpoch`` keeps it)."""
    if METRIC not in hist or hist[METRIC].isna().all():
        return {"best_val_acc": None, "best_test_acc": None, "best_epoch": None}
    row = hist.loc[hist[METRIC].idxmax()]
    return {"best_val_acc": float(row[METRIC]), "best_test_acc": _float(row.get(TEST_METRIC)),
            "best_epoch": int(row[TIME_ATTR])}


def _float(v: object) -> float | None:
    return None if v is None or pd.isna(v) else float(v)


def read_trials(experiment_path: str | Path, searched: list[str], max_epochs: int) -> Trials:
    """All trials of the search at ``experiment_path`` (Tune's saved experiment state)."""
    from ray.tune import ExperimentAnalysis
    analysis = ExperimentAnalysis(str(experiment_path))
    rows, histories = [], []
    for trial in analysis.trials:
        hist = _history(Path(trial.path), trial.trial_id)
        last = hist.iloc[-1] if not hist.empty else pd.Series(dtype=object)
        epochs = int(last.get(TIME_ATTR, 0)) if not hist.empty else 0
        status = {"ERROR": "error", "TERMINATED": "finished" if epochs >= max_epochs else "stopped"}.get(
            trial.status, trial.status.lower())
        if (Path(trial.path) / DIVERGED_FILE).is_file():  # its loss became NaN/inf: no accuracy counts
            status = "diverged"
        row = {"trial_id": trial.trial_id, "status": status, "epochs": epochs,
               "val_acc": last.get(METRIC), "test_acc": last.get(TEST_METRIC), **best_epoch(hist)}
        row |= {name: trial.config.get(name) for name in searched}
        row["trial_dir"] = Path(trial.path).name
        rows.append(row)
        histories.append(hist)
    table = pd.DataFrame(rows)
    if not table.empty:
        table = table.sort_values("val_acc", ascending=False, na_position="last").reset_index(drop=True)
    history = pd.concat([h for h in histories if not h.empty], ignore_index=True) if any(
        not h.empty for h in histories) else pd.DataFrame()
    return Trials(table, history)
