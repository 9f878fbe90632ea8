"""Report of a search: best configuration, table of all trials (parquet + markdown),
importance at a common budget (fANOVA, PED-ANOVA) and plots, written to ``<experiment>/report/``
(a folder or object storage) and logged as artifacts of the search's parent MLflow run
(the command: ``tuning.cli.report``)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from spmi import tables
from tuning.plan.search_plan import SearchPlan, load_plan
from tuning.plan.selection import Selection
from tuning.record import mlflow_log, secrets
from tuning.record.storage import Storage
from tuning.results import plots
from tuning.results.importance import Importance, at_common_budget
from tuning.results.trials import Trials, read_trials

REPORT_DIR = "report"


@dataclass(frozen=True)
class BestTrial:
    """The search's selected trial (``tuning.plan.selection``) and its searched values:
    ``score`` is its ``metric`` under the epoch rule, ``best_epoch`` the epoch that gives it
    (the network published), ``val_acc`` (the clean-label oracle, where measured) and
    ``test_acc`` that network's accuracies."""

    trial_id: str
    status: str
    epochs: int
    best_epoch: int
    score: float
    val_acc: float | None
    test_acc: float | None
    params: dict[str, Any]
    epoch_rule: str = "best"
    metric: str = "val/acc"


@dataclass
class Report:
    plan: SearchPlan
    location: str           # the report folder in the search's storage (a path or a URI)
    folder: Path            # where its files are written locally (a staging folder for object storage)
    trials: Trials
    best: BestTrial | None
    importance: list[Importance] = field(default_factory=list)

    def summary(self) -> str:
        lines = []
        if self.best is None:
            lines.append("no trial reported a validation accuracy")
        else:
            b = self.best
            lines.append(f"best trial {b.trial_id} ({b.status}, {b.epochs} epochs; {b.epoch_rule} epoch "
                         f"{b.best_epoch}): {_scores(b)}")
            lines.append("best settings: " + " ".join(f"{k}={_fmt(v)}" for k, v in b.params.items()))
        if self.importance:
            frame = importance_table(self.importance, list(self.plan.space().params))
            lines.append("hyperparameter importance at a common budget (trials = how many it rests on):")
            lines.append(markdown_table(frame).rstrip())
        lines.append(f"report: {self.location}/report.md")
        lines.append(mlflow_hint(self.plan))
        return "\n".join(lines)


def mlflow_hint(plan: SearchPlan) -> str:
    if plan.tracking_uri.startswith("sqlite:"):
        line = (f"MLflow UI: mlflow ui --backend-store-uri {plan.tracking_uri} --host 127.0.0.1 --port 5000"
                f"  (experiment {plan.name!r})")
    else:
        line = f"MLflow: {plan.tracking_uri} (experiment {plan.name!r})"
    if plan.optuna_storage:
        from tuning.record.optuna_study import dashboard_hint
        line += "\n" + dashboard_hint(plan.optuna_storage, plan.name)
    return secrets.mask(line)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-style markdown table (numbers to 4 significant digits)."""
    def cell(v: Any) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return ""
        return _fmt(v)
    return tables.markdown_table(list(frame.columns), frame.itertuples(index=False), cell) + "\n"


@contextlib.contextmanager
def _staging(storage: Storage, name: str) -> Iterator[Path]:
    """The local folder the report is written in: the report folder itself on local
    storage, else a temporary one uploaded to the storage (and deleted) at the end."""
    if storage.local:
        folder = Path(storage.path(name, REPORT_DIR))
        folder.mkdir(parents=True, exist_ok=True)
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix="spmi-report-") as tmp:
        yield Path(tmp)
        storage.upload_dir(tmp, name, REPORT_DIR)


def make_report(experiment: str | Path, log_mlflow: bool = True, endpoint: str | None = None) -> Report:
    """The report of the search at ``experiment`` (a folder or a URI; ``endpoint``: of s3://)."""
    plan = load_plan(experiment, endpoint)
    with _staging(plan.storage, plan.name) as folder:
        return _make_report(plan, folder, log_mlflow)


def _make_report(plan: SearchPlan, folder: Path, log_mlflow: bool) -> Report:
    space = plan.space()
    trials = read_trials(plan.storage, plan.name, list(space.params), plan.max_epochs, plan.metric)
    table = trials.table
    best = best_trial(plan.selection, table, list(space.params))
    importance = at_common_budget(table, trials.history, space, plan.grace_period, plan.max_epochs, plan.seed,
                                  plan.metric)
    report = Report(plan, plan.storage.uri(plan.name, REPORT_DIR), folder, trials, best, importance)

    if not table.empty:
        table.to_parquet(folder / "trials.parquet", index=False)
        (folder / "trials.md").write_text(markdown_table(table.drop(columns=["trial_dir"])))
    if not trials.history.empty:
        trials.history.to_parquet(folder / "history.parquet", index=False)
        plots.learning_curves(trials.history, best and best.trial_id, folder / "learning_curves.png")
        plots.accuracy_vs_params(table, {n: p.distribution for n, p in space.params.items()},
                                 folder / "accuracy_vs_params.png")
        if best is not None:
            hist = trials.history[trials.history["trial_id"] == best.trial_id]
            plots.candidate_sets(hist, best.trial_id, folder / "candidate_sets.png")
    (folder / "best.json").write_text(json.dumps({"best": best and dataclasses.asdict(best), "importance": [
        dataclasses.asdict(i) for i in importance]}, indent=2))
    (folder / "report.md").write_text(render(report))
    if log_mlflow and plan.parent_run_id:
        log_to_parent(report)
    return report


def best_trial(selection: Selection, table: pd.DataFrame, params: list[str]) -> BestTrial | None:
    """The selected trial of ``table`` (None when no trial ended well)."""
    row = selection.best(table)
    if row is None:
        return None
    test, val = row[selection.test_column], row["best_val_acc" if selection.rule == "best" else "val_acc"]
    epoch = row["best_epoch"] if selection.rule == "best" else row["epochs"]
    return BestTrial(trial_id=row["trial_id"], status=row["status"], epochs=int(row["epochs"]),
                     best_epoch=int(epoch), score=float(row["selection_score"]),
                     val_acc=None if pd.isna(val) else float(val), test_acc=None if pd.isna(test) else float(test),
                     params={n: _plain(row[n]) for n in params}, epoch_rule=selection.rule, metric=selection.metric)


def render(r: Report) -> str:
    p = r.plan
    out = [f"# Search {p.name}: {p.method} on {p.dataset}", "",
           f"{len(r.trials.table)} trials (of {p.num_samples}), up to {p.max_epochs} epochs; searcher "
           f"{p.searcher}, scheduler {p.scheduler} (grace {p.grace_period}, reduction factor {p.reduction_factor}); "
           f"metric {p.metric} ({p.mode}), epoch rule {p.epoch_rule}; "
           f"test accuracy is reported, never optimised.", ""]
    if r.best is not None:
        b = r.best
        out += ["## Best configuration", "",
                f"Trial `{b.trial_id}` ({b.status}, {b.epochs} epochs), at its {b.epoch_rule} epoch "
                f"{b.best_epoch}: {_scores(b, bold=True)}. "
                f"The configuration is {p.selection.describe()}; that epoch's network is the one published.", "",
                markdown_table(pd.DataFrame([b.params])), ""]
    out += ["## Hyperparameter importance at a common budget", "",
            importance_text(r.importance, list(p.space().params))]
    out += ["", "## All trials", "", "Status `stopped`: stopped early by ASHA; its accuracy is partial. "
            "`diverged`: its training loss became NaN/inf, the trial failed and its accuracies are no result. "
            "`error`: the trial failed.", ""]
    if not r.trials.table.empty:
        out.append(markdown_table(r.trials.table.drop(columns=["trial_dir"])))
    out += ["", "## Figures", ""]
    for name, title in (("learning_curves.png", "Learning curves"), ("accuracy_vs_params.png",
                        "Final accuracy against the searched values"),
                        ("candidate_sets.png", "Candidate sets of the best trial")):
        if (r.folder / name).exists():
            out.append(f"![{title}]({name})")
    out += ["", mlflow_hint(p), ""]
    return "\n".join(out)


def importance_table(importance: list[Importance], params: list[str]) -> pd.DataFrame:
    """One row per basis and evaluator: trial count, each parameter's importance, note."""
    rows = [{"basis": i.basis, "evaluator": i.evaluator, "trials": i.n_trials,
             **{n: i.values.get(n) for n in params}, "note": i.note} for i in importance]
    return pd.DataFrame(rows, columns=["basis", "evaluator", "trials", *params, "note"])


def importance_text(importance: list[Importance], params: list[str]) -> str:
    return ("Final accuracies mix trials ASHA stopped at the grace period with trials trained to the end, "
            "so each importance compares trials at one budget; `trials` is how many it rests on.\n\n"
            + markdown_table(importance_table(importance, params)))


def log_to_parent(r: Report) -> None:
    """Report files as artifacts of the parent run; the best result as its tags and metrics."""
    p = r.plan

    def log() -> None:
        c = mlflow_log.client(p.tracking_uri)
        mlflow_log.retry(lambda: c.log_artifacts(p.parent_run_id, str(r.folder), REPORT_DIR))
        if r.best is not None:
            b = r.best
            mlflow_log.set_tags(p.tracking_uri, p.parent_run_id,
                                {"best_trial_id": b.trial_id, "best/trial": b.trial_id, "epoch_rule": b.epoch_rule,
                                 "metric": b.metric,
                                 **{f"best.{k}": v for k, v in b.params.items()}})
            mlflow_log.log_metrics(p.tracking_uri, p.parent_run_id,
                                   {"best/score": b.score, "best/val_acc": b.val_acc, "best/test_acc": b.test_acc,
                                    "best/epoch": b.best_epoch}, step=len(r.trials.table))
        importance = {f"importance/{i.key}/{k}": v for i in r.importance for k, v in i.values.items()}
        importance |= {f"importance/{i.key}/trials": i.n_trials for i in r.importance}
        mlflow_log.log_metrics(p.tracking_uri, p.parent_run_id, importance, step=0)
    try:
        mlflow_log.outage_retry(log, "logging the report")
    except Exception as err:
        print(f"warning: could not log the report to MLflow ({p.tracking_uri}): {err}", file=sys.stderr)


def _scores(b: BestTrial, bold: bool = False) -> str:
    """``val/approx_acc 0.81 (the search's metric), val/acc 0.80, test/acc 0.79``."""
    mark = "**" if bold else ""
    if b.metric == "val/acc":
        return f"{mark}val/acc {b.score:.4f}{mark}, test/acc {_acc(b.test_acc)}"
    return (f"{mark}{b.metric} {b.score:.4f}{mark} (the search's metric), val/acc {_acc(b.val_acc)}, "
            f"test/acc {_acc(b.test_acc)}")


def _acc(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def _plain(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v
