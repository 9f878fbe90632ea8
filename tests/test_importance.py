"""Importance at a common budget: val/acc at the grace period over every trial, the best
val/acc over the trials that ran to the end; fANOVA and PED-ANOVA; trial counts stated."""

from __future__ import annotations

import pandas as pd

from tuning.plan.spaces import load_space
from tuning.results.importance import MIN_TRIALS, at_common_budget

SPACE = """\
method: spmi
params:
  lr: {paper: 0.05, distribution: loguniform, low: 0.01, high: 0.1}
  warmup: {paper: 1, distribution: int, low: 0, high: 1}
  tau: {paper: 3.0, distribution: uniform, low: 1.0, high: 5.0}
"""
GRACE, MAX_EPOCHS = 2, 4


def search(n: int, finished_every: int):
    """``n`` trials; val/acc up to the grace period follows lr only, after it tau only."""
    rows, hist = [], []
    for i in range(n):
        lr, warmup, tau = 0.01 * (1 + 9 * ((i * 7) % n) / n), i % 2, 1.0 + 4 * ((i * 5 + 3) % n) / n
        epochs = MAX_EPOCHS if i % finished_every == 0 else GRACE
        accs = {e: (0.3 + 3 * lr if e <= GRACE else 0.2 + 0.1 * tau) for e in range(1, epochs + 1)}
        hist += [{"trial_id": f"t{i}", "epoch": e, "val/acc": a} for e, a in accs.items()]
        rows.append({"trial_id": f"t{i}", "epochs": epochs, "best_score": max(accs.values()),
                     "lr": lr, "warmup": warmup, "tau": tau})
    return pd.DataFrame(rows), pd.DataFrame(hist)


def test_each_basis_compares_trials_at_one_budget(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(SPACE)
    space = load_space(path, "spmi")
    table, history = search(24, finished_every=2)
    result = {(i.key, i.evaluator): i for i in at_common_budget(table, history, space, GRACE, MAX_EPOCHS)}
    assert set(result) == {("grace/fANOVA", "fANOVA"), ("grace/PED-ANOVA", "PED-ANOVA"),
                           ("finished/fANOVA", "fANOVA"), ("finished/PED-ANOVA", "PED-ANOVA")}
    grace, finished = result["grace/fANOVA", "fANOVA"], result["finished/fANOVA", "fANOVA"]
    assert grace.n_trials == 24 and finished.n_trials == 12
    assert max(grace.values, key=grace.values.get) == "lr"          # what mattered by the grace period
    assert max(finished.values, key=finished.values.get) == "tau"   # what mattered at the end
    ped = result["finished/PED-ANOVA", "PED-ANOVA"]
    assert ped.n_trials == 12 and set(ped.values) == {"lr", "warmup", "tau"}
    assert "too few" not in grace.note and "too few" not in finished.note


def test_too_few_trials_are_flagged_or_refused(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(SPACE)
    space = load_space(path, "spmi")
    table, history = search(MIN_TRIALS - 2, finished_every=MIN_TRIALS)   # one trial ran to the end
    result = {i.key: i for i in at_common_budget(table, history, space, GRACE, MAX_EPOCHS)}
    assert result["grace/fANOVA"].values and f"only {MIN_TRIALS - 2} trials: too few" in result["grace/fANOVA"].note
    assert result["finished/fANOVA"].n_trials == 1 and result["finished/fANOVA"].values == {}
    assert "needs at least 2 trials" in result["finished/fANOVA"].note
