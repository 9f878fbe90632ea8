"""Searchers and schedulers as choices of every search (``--searcher {tpe, random, grid}``,
``--scheduler {asha, hyperband, fifo}``): Optuna's samplers and Ray's schedulers, recorded
in the search folder, the report and MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pandas as pd
import pytest
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, HyperBandScheduler
from test_search import SPACE, common, run_cli, runs_of, write_tiny

from tuning.cli import search
from tuning.driver import runner
from tuning.record import optuna_study

GRID_SPACE = """\
method: spmi
dataset: fmnist
params:
  lr:
    paper: 0.05
    distribution: categorical
    choices: [0.01, 0.05]
  warmup:
    paper: 1
    distribution: int
    low: 0
    high: 1
  tau:
    paper: 3.0
    distribution: categorical
    choices: [3.0]
"""


def grid_tiny(root: Path) -> dict[str, Path]:
    tiny = write_tiny(root)
    (root / "grid.yaml").write_text(GRID_SPACE)
    return {**tiny, "space": root / "grid.yaml"}


def plan_of(argv: list[str]):
    """A new search's plan, with its Optuna study (what the searcher opens)."""
    plan = search.prepare(search.build_parser().parse_args(argv))[0]
    optuna_study.create_study(plan.optuna_storage, plan.name, plan.mode, plan.study_attrs)
    return plan


def test_each_choice_builds_its_sampler_and_scheduler(tmp_path):
    tiny = grid_tiny(tmp_path)
    base = [*common(tiny, tmp_path / "hpo"), "--max-epochs", "9", "--grace-period", "3", "--reduction-factor", "3"]
    grid = plan_of([*base, "--searcher", "grid", "--scheduler", "fifo", "--name", "g"])
    assert (grid.searcher, grid.scheduler, grid.num_samples) == ("grid", "fifo", 4)   # 2 lr x 2 warmup x 1 tau
    assert grid.space().grid() == {"lr": [0.01, 0.05], "warmup": [0, 1], "tau": [3.0]}
    assert isinstance(runner.make_scheduler(grid), FIFOScheduler) and runner.stop_epochs(grid) == ()
    assert runner.asha_of(grid).expected_epochs() == 9   # FIFO: every trial runs to the end
    searcher = runner.make_searcher(grid, grid.space())
    assert isinstance(searcher.sampler, optuna.samplers.GridSampler) and searcher._points == []
    hyper = plan_of([*base, "--searcher", "random", "--scheduler", "hyperband", "--name", "h"])
    assert isinstance(runner.make_scheduler(hyper), HyperBandScheduler) and runner.stop_epochs(hyper) == (1, 3)
    assert isinstance(runner.make_searcher(hyper, hyper.space()).sampler, optuna.samplers.RandomSampler)
    default = plan_of([*base, "--name", "d"])
    assert (default.searcher, default.scheduler) == ("tpe", "asha")
    assert isinstance(runner.make_scheduler(default), ASHAScheduler) and runner.stop_epochs(default) == (3, 9)
    assert isinstance(runner.make_searcher(default, default.space()).sampler, optuna.samplers.TPESampler)
    assert runner.trial_spec(hyper).test_epochs == (1, 3)
    assert json.loads(json.dumps(grid.to_dict()))["scheduler"] == "fifo"   # search.json keeps the choices


def test_a_grid_needs_explicit_values_and_fixes_the_trial_count(tmp_path, capsys):
    tiny = write_tiny(tmp_path)   # lr loguniform: no explicit values
    code = search.main([*common(tiny, tmp_path / "hpo"), "--searcher", "grid"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--searcher grid needs explicit values: lr is loguniform on [0.01, 0.1]" in err
    grid = grid_tiny(tmp_path / "g")
    assert search.main([*common(grid, tmp_path / "hpo"), "--searcher", "grid", "--num-samples", "5"]) == 2
    assert "runs each of the space's 4 points once; drop --num-samples 5" in capsys.readouterr().err
    assert SPACE  # the default tiny space (continuous lr) is what the first case refused


def test_proposer_of_each_kind():
    tpe = optuna_study.tpe_settings(8, 1, seed=0)
    assert isinstance(optuna_study.make_proposer("tpe", tpe, 0), optuna.samplers.TPESampler)
    assert isinstance(optuna_study.make_proposer("random", tpe, 0), optuna.samplers.RandomSampler)
    with pytest.raises(ValueError, match="--searcher grid needs the space's explicit values"):
        optuna_study.make_proposer("grid", tpe, 0)


@pytest.mark.slow
def test_a_grid_search_with_fifo_runs_every_point_once_to_the_end(tmp_path):
    tiny, storage = grid_tiny(tmp_path), tmp_path / "hpo"
    done = run_cli([*common(tiny, storage), "--searcher", "grid", "--scheduler", "fifo", "--max-epochs", "2",
                    "--grace-period", "2", "--max-concurrent", "2", "--name", "g"], tmp_path, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:]
    table = pd.read_parquet(storage / "g" / "report" / "trials.parquet")
    assert sorted(zip(table["lr"], table["warmup"], strict=True)) == [(0.01, 0), (0.01, 1), (0.05, 0), (0.05, 1)]
    assert set(table["status"]) == {"finished"} and set(table["epochs"]) == {2}
    study = optuna.load_study(study_name="g", storage=f"sqlite:///{storage}/optuna.db")
    assert sorted((t.params["lr"], t.params["warmup"]) for t in study.trials) == [
        (0.01, 0), (0.01, 1), (0.05, 0), (0.05, 1)]
    assert "searcher grid, scheduler fifo" in (storage / "g" / "report" / "report.md").read_text()
    runs, _ = runs_of(f"sqlite:///{storage}/mlflow.db", "g")
    parent = runs[runs["tags.role"] == "search"].iloc[0]
    assert (parent["tags.searcher"], parent["tags.scheduler"]) == ("grid", "fifo")
