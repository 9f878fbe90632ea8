"""Reading a search's trials back from its experiment folder: one row per trial (status,
searched values, final accuracies) and every epoch's metrics."""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass

import pandas as pd
import pyarrow.fs as pafs

from tuning.plan.grid_plan import GridPlan
from tuning.plan.settings import METRIC, TIME_ATTR
from tuning.record.storage import Storage, open_storage
from tuning.trial.diverged import DIVERGED_FILE

TEST_METRIC, TEST_EPOCH = "test/acc", "test/epoch"  # test/epoch: the trainer's 0-based epoch of test/acc
BEST_TEST, BEST_EPOCH = "best/test_acc", "best/epoch"


@dataclass
class Trials:
    table: pd.DataFrame     # one row per trial
    history: pd.DataFrame   # one row per trial and epoch

    def completed(self) -> pd.DataFrame:
        """Trials with a validation accuracy that ended well (finished or stopped by ASHA):
        a failed or diverged trial's last accuracy is no result."""
        if self.table.empty:
            return self.table
        return self.table[self.table["score"].notna() & self.table["status"].isin(["finished", "stopped"])]



def _history(fs: pafs.FileSystem, trial_dir: str, trial_id: str) -> pd.DataFrame:
    path = posixpath.join(trial_dir, "result.json")
    rows = []
    if fs.get_file_info(path).type == pafs.FileType.File:
        with fs.open_input_stream(path) as f:
            text = f.read().decode()
        for line in text.splitlines():
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


def best_epoch(hist: pd.DataFrame, metric: str = METRIC) -> dict[str, float | int | None]:
    """The first epoch of highest ``metric`` (the search's objective): its value
    (``best_score``), its val/acc, number and test/acc (as the trial's
    ``tuning.trial.best.BestEpoch`` keeps them). The test accuracy is the last record's
    ``best/test_acc`` when it is that epoch's (trials measure it where they may end), else
    the epoch's own ``test/acc`` if it was measured then (records of older searches)."""
    if metric not in hist or hist[metric].isna().all():
        return {"best_score": None, "best_val_acc": None, "best_test_acc": None, "best_epoch": None}
    row, last = hist.loc[hist[metric].idxmax()], hist.iloc[-1]
    epoch = int(row[TIME_ATTR])
    test = _float(last.get(BEST_TEST)) if _float(last.get(BEST_EPOCH)) == epoch else None
    if test is None and _float(row.get(TEST_EPOCH, epoch - 1)) == epoch - 1:
        test = _float(row.get(TEST_METRIC))
    return {"best_score": float(row[metric]), "best_val_acc": _float(row.get(METRIC)), "best_test_acc": test,
            "best_epoch": epoch}


def _float(v: object) -> float | None:
    return None if v is None or pd.isna(v) else float(v)


def read_trials(storage: Storage, name: str, searched: list[str], max_epochs: int, metric: str = METRIC) -> Trials:
    """All trials of the search ``name`` in ``storage`` (Tune's saved experiment state);
    ``score`` and ``best_score`` are the search's ``metric`` at the last and the best epoch,
    ``val_acc`` and ``best_val_acc`` the clean-label val/acc there."""
    from ray.tune import ExperimentAnalysis
    path, fs = storage.ray_location(name)
    analysis = ExperimentAnalysis(path, storage_filesystem=fs)
    rows, histories = [], []
    for trial in analysis.trials:
        hist = _history(storage.filesystem, trial.path, trial.trial_id)
        last = hist.iloc[-1] if not hist.empty else pd.Series(dtype=object)
        epochs = int(last.get(TIME_ATTR, 0)) if not hist.empty else 0
        status = {"ERROR": "error", "TERMINATED": "finished" if epochs >= max_epochs else "stopped"}.get(
            trial.status, trial.status.lower())
        marker = posixpath.join(trial.path, DIVERGED_FILE)
        if storage.filesystem.get_file_info(marker).type == pafs.FileType.File:  # its loss became NaN/inf
            status = "diverged"
        row = {"trial_id": trial.trial_id, "status": status, "epochs": epochs, "score": last.get(metric),
               "val_acc": last.get(METRIC), "test_acc": last.get(TEST_METRIC), **best_epoch(hist, metric)}
        row |= {name: trial.config.get(name) for name in searched}
        row["trial_dir"] = posixpath.basename(trial.path)
        rows.append(row)
        histories.append(hist)
    table = pd.DataFrame(rows)
    if not table.empty:
        table = table.sort_values("score", ascending=False, na_position="last").reset_index(drop=True)
    history = pd.concat([h for h in histories if not h.empty], ignore_index=True) if any(
        not h.empty for h in histories) else pd.DataFrame()
    return Trials(table, history)


def grid_results(plan: GridPlan) -> pd.DataFrame:
    """One row per run of a grid: cell, seed, status, epochs, final val/acc and test/acc, and
    the best-val epoch's val/acc, test/acc and number."""
    table = read_trials(open_storage(plan.storage_path), plan.name, ["cell", "seed"], plan.epochs,
                        plan.metric).table
    return table.drop(columns=["trial_dir"]).sort_values(["cell", "seed"]).reset_index(drop=True)
