"""benchmarks/selection_regret.py on a table written here (a test table): the regret of each
criterion's choice against the best in hindsight, and its rank correlation with test accuracy."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from benchmarks import selection_regret as sr

BASE = {0.01: 0.70, 0.03: 0.80, 0.1: 0.60}   # each configuration's test accuracy before its epoch's gain


def table() -> pd.DataFrame:
    rows = []
    for seed in (0, 1):
        for lr, base in BASE.items():
            for epoch in (1, 2, 3):
                test = base + 0.01 * epoch + 0.001 * seed
                rows.append({"lr": lr, "warmup": 5, "labelled": 1000, "seed": seed, "epoch": epoch, "test/acc": test,
                             "val/acc": test, "val/approx_acc": 1 - base + 0.01 * epoch,    # ranks them backwards
                             "val/covering_rate": 0.9 - 0.1 * epoch + base / 10})           # peaks at epoch 1
    rows.append({"lr": 0.03, "warmup": 5, "labelled": 1000, "seed": 2, "epoch": 1, "test/acc": 0.2, "val/acc": 0.99,
                 "val/approx_acc": 0.99, "val/covering_rate": 0.99})   # a top-configuration seed: left out
    return pd.DataFrame(rows)


def test_regret_and_rank_correlation_of_each_criterion(tmp_path, capsys):
    rows = {(r.criterion, r.rule): r for r in sr.regrets(table())}
    assert set(rows) == {(c, r) for c in sr.CRITERIA for r in sr.RULES}
    oracle = rows[("val/acc", "last")]
    assert (oracle.seeds, oracle.configurations) == (2, 3)
    assert oracle.regret == pytest.approx(0.0) and oracle.picked_best == 1.0 and oracle.spearman == pytest.approx(1.0)
    backwards = rows[("val/approx_acc", "last")]      # picks lr 0.1: 0.63 against 0.83
    assert backwards.regret == pytest.approx(20.0) and backwards.picked_best == 0.0 and backwards.spearman < 0
    # the best rule: covering rate peaks at epoch 1, where lr 0.03's test accuracy is 0.81 (not 0.83)
    covering = rows[("val/covering_rate", "best")]
    assert covering.regret == pytest.approx(2.0) and covering.picked_best == 0.0
    folder = tmp_path / "t"
    (folder / "parts").mkdir(parents=True)
    for i, (_, part) in enumerate(table().groupby(["lr", "seed"])):
        part.to_parquet(folder / "parts" / f"{i}.parquet")
    assert sr.main([str(folder), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {(r["criterion"], r["rule"]) for r in out["rows"]} == set(rows)
    assert sr.main([str(tmp_path / "none")]) == 2 and "no table at" in capsys.readouterr().err
