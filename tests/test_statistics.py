"""Statistics a reviewer would sign (issue 21): one definition of the selected trial,
failed and diverged runs out of every mean, paired tests on shared seeds, never equality
from overlapping intervals. Fast: tables are written here, nothing trains."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from tuning.plan.grid_plan import ConfirmSettings, TopConfig
from tuning.plan.selection import Selection, distinct
from tuning.results.confirmation import compare
from tuning.results.report import best_trial
from tuning.results.stats import interval, paired

A = [0.800, 0.810, 0.820]


def trial(trial_id: str, status: str, epochs: int, val: float, best_val: float, lr: float = 0.01,
          test: float = 0.5, best_test: float = 0.6, best_epoch: int = 1) -> dict:
    return {"trial_id": trial_id, "status": status, "epochs": epochs, "score": val, "best_score": best_val,
            "val_acc": val, "test_acc": test, "best_val_acc": best_val, "best_test_acc": best_test,
            "best_epoch": best_epoch, "lr": lr}


TRIALS = pd.DataFrame([
    trial("early", "stopped", 5, 0.90, 0.91, lr=0.1, best_epoch=4),        # peaked early, cut by ASHA at epoch 5
    trial("steady", "finished", 20, 0.85, 0.86, lr=0.03, best_epoch=12, best_test=0.84),
    trial("late", "finished", 20, 0.87, 0.87, lr=0.05, test=0.83, best_test=0.83, best_epoch=20),
    trial("broken", "diverged", 20, 0.99, 0.99, lr=0.3),                    # a diverged trial's number is no result
    trial("failed", "error", 20, 0.98, 0.98, lr=0.2),
    trial("rung2", "stopped", 10, 0.88, 0.88, lr=0.07),
])


def test_a_finished_trial_is_selected_over_one_stopped_early_and_failed_ones_never():
    ranked = Selection("best", 20).rank(TRIALS)
    assert list(ranked["trial_id"]) == ["late", "steady", "rung2", "early"]   # ASHA's order below the finished
    assert not ranked["trial_id"].isin(["broken", "failed"]).any()


def test_the_epoch_rule_is_a_named_choice_that_changes_the_score():
    best = Selection("best", 20)
    last = Selection("last", 20)
    assert best.best(TRIALS)["trial_id"] == "late" and last.best(TRIALS)["trial_id"] == "late"
    table = TRIALS.assign(best_score=TRIALS["best_score"].where(TRIALS["trial_id"] != "steady", 0.95))
    assert best.best(table)["trial_id"] == "steady" and last.best(table)["trial_id"] == "late"
    assert best.value({1: 0.5, 2: 0.7, 3: 0.6}) == 0.7 and last.value({1: 0.5, 2: 0.7, 3: 0.6}) == 0.6
    with pytest.raises(ValueError, match="epoch rule 'peak': choose one of best, last"):
        Selection("peak", 20)


def test_the_report_names_the_selected_trial_its_epoch_and_that_networks_test_accuracy():
    b = best_trial(Selection("best", 20), TRIALS.assign(
        best_score=TRIALS["best_score"].where(TRIALS["trial_id"] != "steady", 0.95)), ["lr"])
    assert (b.trial_id, b.best_epoch, b.score, b.val_acc, b.test_acc, b.epoch_rule) == (
        "steady", 12, 0.95, 0.86, 0.84, "best")
    last = best_trial(Selection("last", 20), TRIALS, ["lr"])
    assert (last.trial_id, last.best_epoch, last.score, last.test_acc) == ("late", 20, 0.87, 0.83)
    assert best_trial(Selection("best", 20), TRIALS[TRIALS["status"] == "error"], ["lr"]) is None


def test_distinct_keeps_the_best_trial_of_a_repeated_configuration():
    table = pd.concat([TRIALS, pd.DataFrame([trial("again", "finished", 20, 0.80, 0.80, lr=0.05)])])
    ranked = distinct(Selection("best", 20).rank(table), ["lr"])
    assert list(ranked["trial_id"]) == ["late", "steady", "rung2", "early"]


def test_paired_test_sees_a_constant_difference_that_overlapping_intervals_hide():
    a, b = pd.Series(A, index=[1, 2, 3]), pd.Series(np.array(A) - 0.005, index=[1, 2, 3])
    ia, ib = interval(a), interval(b)
    assert ia["lo"] < ib["hi"]                 # the 95% intervals overlap ...
    p = paired(a, b, ("A", "B"), "val/acc")
    assert p.t_p < 1e-6 and p.mean == pytest.approx(0.005)  # ... and the paired difference is certain
    assert p.sentence().startswith("A better than B by 0.50 ± 0.00 pt by val/acc (paired t-test p = ")
    assert "3 seeds" in p.sentence()


def test_paired_uses_the_shared_seeds_and_never_claims_equality():
    a = pd.Series([0.80, 0.82, 0.79, 0.81, math.nan], index=[1, 2, 3, 4, 5])
    b = pd.Series([0.81, 0.80, 0.80, 0.80, 0.90], index=[1, 2, 3, 4, 6])
    p = paired(a, b, ("A", "B"), "val/acc")
    assert p.seeds == (1, 2, 3, 4) and p.mean == pytest.approx(0.0025)
    assert p.lo < 0 < p.hi and p.t_p > 0.05 and 0 <= p.wilcoxon_p <= 1
    words = p.sentence()
    assert "no difference shown at the 5% level, which does not make them equal" in words
    assert "apart" not in words and "equal" in words
    one = paired(a.loc[[1]], b.loc[[1]], ("A", "B"), "val/acc")
    assert one.n == 1 and "too few shared seeds to test" in one.sentence()


def runs(rows: list[tuple[str, int, str, float]]) -> pd.DataFrame:
    """Per-run table of a confirmation: (cell, seed, status, final val/acc); the other metrics follow it."""
    frame = pd.DataFrame(rows, columns=["cell", "seed", "status", "val_acc"])
    return frame.assign(best_val_acc=frame["val_acc"] + 0.01, test_acc=frame["val_acc"] - 0.02,
                        best_test_acc=frame["val_acc"] - 0.01, epochs=20)


SETTINGS = ConfirmSettings((TopConfig(1, "t1", 20, 0.85, {"lr": 0.03}), TopConfig(2, "t2", 20, 0.84, {"lr": 0.05})),
                           epoch_rule="best")


def test_failed_and_diverged_runs_are_counted_never_averaged():
    table, verdict = compare(runs([
        ("rank1", 1, "finished", 0.80), ("rank1", 2, "finished", 0.81), ("rank1", 3, "diverged", 0.10),
        ("rank2", 1, "finished", 0.79), ("rank2", 2, "error", 0.20), ("rank2", 3, "finished", 0.78)]),
        SETTINGS, (1, 2, 3), 20)
    row = table.set_index("cell").loc["rank1"]
    assert row["val/acc/mean"] == pytest.approx(0.805) and (row["finished"], row["failed"]) == (2, 1)
    assert verdict.finished == {"rank1": "2 of 3 seeds finished (1 diverged)",
                                "rank2": "2 of 3 seeds finished (1 error)"}
    assert "2 of 3 seeds finished (1 diverged)" in verdict.statement
    # rank1 and rank2 share one finished seed (1): too few to test
    val = next(p for p in verdict.paired if p.metric == "val/acc (best-val epoch)")
    assert val.seeds == (1,) and "too few shared seeds" in verdict.statement


def test_the_verdict_states_what_the_paired_data_show():
    table, verdict = compare(runs([
        *(("rank1", s, "finished", v) for s, v in zip((1, 2, 3), A, strict=True)),
        *(("rank2", s, "finished", v - 0.005) for s, v in zip((1, 2, 3), A, strict=True))]), SETTINGS, (1, 2, 3), 20)
    assert verdict.chosen == "rank1" and verdict.epoch_rule == "best"
    assert {p.metric for p in verdict.paired} == {"val/acc (best-val epoch)", "test/acc (best-val epoch)"}
    assert "rank1 better than rank2 by 0.50 ± 0.00 pt by val/acc (best-val epoch)" in verdict.statement
    assert "do not tell" not in verdict.statement and "3 of 3 seeds finished" in verdict.statement
    as_json = verdict.to_dict()
    assert as_json["paired"][0]["n"] == 3 and as_json["paired"][0]["t_test_p"] < 1e-6


def table_grid(paper_protocol: bool = True):
    from spmi.config import resolve
    from tuning.plan.grid_plan import Cell, GridPlan, TableCell, TableSettings
    cfg = resolve({"dataset": "fmnist", "method": "spmi", "labelled": 1000, "partial_rate": 0.3, "val_size": 0})
    facts = TableCell("c", "fmnist", 1000, 0.3, "spmi", "paper", 80.0, "l=1000, p=0.3; every training image",
                      paper_protocol)
    return GridPlan(name="t", storage_path="/nowhere", plan_file="reproduce.json", cells=(Cell("c", cfg, {}, {}),),
                    seeds=(1, 2, 3, 4), epochs=20, tracking_uri="", experiment_id="", parent_run_id="",
                    role="reproduce", search="t",
                    extra=TableSettings(("fmnist",), ("spmi",), (("fmnist", 1000, 0.3),), (), "reproduce", (facts,)))


def table_runs() -> pd.DataFrame:
    rows = [("c", 1, "finished", 0.81), ("c", 2, "finished", 0.82), ("c", 3, "finished", 0.83),
            ("c", 4, "diverged", 0.10)]
    return runs(rows).assign(best_test_acc=math.nan)


def test_the_paper_table_averages_finished_runs_and_gives_the_difference_with_its_interval():
    from tuning.results.reproduction import render, table_of
    frame = table_of(table_grid(), table_runs())
    row = frame.iloc[0]
    final = interval([79.0, 80.0, 81.0])   # test_acc = val_acc - 0.02 of the three finished seeds, in %
    assert (row["n"], row["failed"], row["planned"]) == (3, 1, 4)
    assert row["test_acc_mean"] == pytest.approx(80.0) and row["diff"] == pytest.approx(0.0)
    assert row["diff_lo"] == pytest.approx(final["lo"] - 80.0) and row["diff_hi"] == pytest.approx(final["hi"] - 80.0)
    text = render(table_grid(), frame)
    assert "Δ +0.00 [-2.48, +2.48]" in text and "3 of 4 seeds finished" in text
    assert "l=1000, p=0.3; every training image" in text     # the protocol column
    other = table_of(table_grid(paper_protocol=False), table_runs()).iloc[0]
    assert math.isnan(other["diff"])
    assert "another protocol: no Δ" in render(table_grid(paper_protocol=False), frame.assign(paper_protocol=False))


def test_the_paper_protocol_is_the_full_training_set():
    from spmi.config import resolve
    from tuning.cli.reproduce import build_parser, is_paper_protocol, protocol_of
    assert build_parser().parse_args([]).val_size == 0
    full = resolve({"dataset": "fmnist", "method": "spmi", "labelled": 1000, "partial_rate": 0.3, "val_size": 0})
    assert is_paper_protocol(full) and protocol_of(full) == "l=1000, p=0.3; every training image (the paper's); " \
                                                           "all unlabelled"
    quick = resolve({"dataset": "fmnist", "method": "spmi", "labelled": 1000, "partial_rate": 0.3,
                     "val_size": 2000, "unlabelled_size": 5000})
    assert not is_paper_protocol(quick)
    assert protocol_of(quick) == "l=1000, p=0.3; 2000 held out for validation; 5000 unlabelled"


def test_a_searched_configuration_keeps_its_row_and_never_its_data_protocol(tmp_path, capsys):
    """A quick search (l = 20, 50 held out, 100 unlabelled) configures only its own row of the
    paper table, with the row's protocol (every training image, all unlabelled); the other
    row takes the paper's configuration, and says so."""
    import json

    from datagen import write_idx_fmnist
    from tuning.cli import reproduce, search
    write_idx_fmnist(tmp_path / "data", n_train=300, n_test=60)
    storage = tmp_path / "hpo"
    plan, _ = search.prepare(search.build_parser().parse_args([
        "--dataset", "fmnist", "--preset", "quick", "--data-root", str(tmp_path / "data"), "--no-verify-data",
        "--labelled", "20", "--val-size", "50", "--unlabelled-size", "100", "--storage-path", str(storage),
        "--name", "s"]))
    plan.save()
    report = storage / "s" / "report"
    report.mkdir(parents=True)
    (report / "best.json").write_text(json.dumps({"best": {"params": {"lr": 0.0123, "warmup": 2}}}))
    common = ["--datasets", "fmnist", "--methods", "spmi", "--setting", "fmnist:20:0.3", "--setting", "fmnist:30:0.3",
              "--config-from", "fmnist/spmi=search:s", "--storage-path", str(storage), "--data-root",
              str(tmp_path / "data"), "--no-verify-data", "--epochs", "2", "--gpus-per-trial", "0"]
    grid, _ = reproduce.prepare(reproduce.build_parser().parse_args(common))
    cells = {c.key: c for c in grid.cells}
    mine, other = cells["fmnist-l20-p0.3-spmi"], cells["fmnist-l30-p0.3-spmi"]
    assert mine.tags["config_from"] == "search:s" and mine.values == {"lr": 0.0123, "warmup": 2}
    assert (mine.base.val_size, mine.base.unlabelled_size, mine.base.labelled) == (0, None, 20)
    assert other.tags["config_from"] == "paper" and other.base.labelled == 30
    assert "was searched at l=20 p=0.3; this row uses the paper's configuration" in capsys.readouterr().out
    assert all(c.paper_protocol for c in grid.extra.cells)
    everywhere, _ = reproduce.prepare(reproduce.build_parser().parse_args(
        [*common, "--search-config-all-rows", "--name", "all"]))
    assert {c.tags["config_from"] for c in everywhere.cells} == {"search:s"}
