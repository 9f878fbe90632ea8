"""Selection as a partial-label user has it (issue 22): the search's ``--metric`` may be a
partial-label criterion of a validation set carved from the labelled budget; ASHA, TPE, the
kept network, the report, the published model and the confirmation all use it, and every
output names it."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pandas as pd
import pytest
from test_search import common, run_cli, runs_of, write_tiny

from tuning.cli import search
from tuning.plan.selection import Selection

METRIC = "val/approx_acc"


@pytest.fixture
def tiny(tmp_path: Path) -> dict[str, Path]:
    return write_tiny(tmp_path)


@pytest.mark.parametrize("extra", [[], ["--val-labels", "true"]])
def test_a_partial_label_metric_needs_validation_candidate_sets(tiny, tmp_path, extra, capsys) -> None:
    code = search.main([*common(tiny, tmp_path / "hpo"), "--metric", METRIC, *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: --metric val/approx_acc: the validation images carry their true "
                                        "labels") and "--val-from-labelled K" in err and "\n" not in err


def test_the_plan_records_the_metric_with_candidate_sets(tiny, tmp_path) -> None:
    args = search.build_parser().parse_args([*common(tiny, tmp_path / "hpo"), "--metric", METRIC,
                                             "--val-labels", "partial", "--name", "m"])
    plan, _ = search.prepare(args)
    assert plan.metric == METRIC and plan.study_attrs.metric == METRIC and plan.selection.metric == METRIC
    assert plan.base.val_labels == "partial"


@pytest.mark.slow
def test_a_tiny_search_selects_on_the_approximated_accuracy_of_a_carved_validation_set(tmp_path) -> None:
    tiny, storage = write_tiny(tmp_path), tmp_path / "hpo"
    done = run_cli([*common(tiny, storage), "--metric", METRIC, "--val-from-labelled", "10", "--num-samples", "3",
                    "--max-epochs", "3", "--grace-period", "2", "--max-concurrent", "1", "--name", "p"],
                   tmp_path, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:]
    assert f"epochs: {METRIC} " in done.stdout       # the driver's per-trial lines name the metric
    report = storage / "p" / "report"
    plan = json.loads((storage / "p" / "search.json").read_text())
    assert plan["metric"] == METRIC and plan["base"]["val_from_labelled"] == 10
    table = pd.read_parquet(report / "trials.parquet")
    history = pd.read_parquet(report / "history.parquet")
    assert {"val/acc", "val/covering_rate", METRIC, "holdout/acc", "holdout/approx_acc"} <= set(history)
    for row in table.itertuples():   # each trial's best epoch and score are by the approximated accuracy
        mine = history[history["trial_id"] == row.trial_id]
        assert row.best_score == pytest.approx(mine[METRIC].max()) and row.score == mine[METRIC].iloc[-1]
        assert row.best_epoch == int(mine.loc[mine[METRIC].idxmax(), "epoch"])
    chosen = Selection("best", 3, METRIC).best(table)
    best = json.loads((report / "best.json").read_text())["best"]
    assert best["trial_id"] == chosen["trial_id"] and best["metric"] == METRIC
    assert best["score"] == pytest.approx(chosen["best_score"])
    text = (report / "report.md").read_text()
    assert f"**{METRIC} {best['score']:.4f}** (the search's metric)" in text
    study = optuna.load_study(study_name="p", storage=f"sqlite:///{storage}/optuna.db")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert complete and all(t.value == pytest.approx(max(t.intermediate_values.values())) for t in complete)
    finished = table[table["status"] == "finished"]
    assert sorted(t.value for t in complete) == pytest.approx(sorted(finished["best_score"]))
    runs, _ = runs_of(f"sqlite:///{storage}/mlflow.db", "p")
    parent = runs[runs["tags.role"] == "search"].iloc[0]
    assert parent["tags.metric"] == METRIC and parent["metrics.best/score"] == pytest.approx(best["score"])
