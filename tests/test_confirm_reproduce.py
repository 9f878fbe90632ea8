"""Confirmation of a search and the paper table, end to end on tiny generated
Fashion-MNIST files: each driver is SIGKILLed mid-run and resumed, and the result holds
every run once; plus the interval arithmetic and bad input refused before Ray starts."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from test_search import common, epochs_logged, kill_session, run_cli, runs_of, wait_for_resumable, write_tiny

from tuning.cli import confirm, reproduce
from tuning.results.stats import interval

REPO = Path(__file__).resolve().parent.parent
CONFIRM, REPRODUCE = REPO / "tuning" / "confirm.py", REPO / "tuning" / "reproduce.py"  # the scripts (shims)


def kill_then_resume(script: Path, args: list[str], folder: Path, cwd: Path, resume: list[str]) -> str:
    """Start ``script``, SIGKILL its session once the experiment state it saved holds a run
    with a checkpoint, run it again with ``resume``; its output."""
    driver = subprocess.Popen([sys.executable, str(script), *args], cwd=cwd, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for_resumable(folder, driver)
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(30)
    finally:
        kill_session(driver.pid)
    done = subprocess.Popen([sys.executable, str(script), *resume], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = done.communicate(timeout=400)
    finally:
        kill_session(done.pid)
    assert done.returncode == 0, out[-3000:]
    assert "resuming " in out
    return out


def each_run_once(runs: pd.DataFrame, client, n: int, epochs: int) -> None:
    assert len(runs) == n and runs["tags.trial_id"].nunique() == n
    assert set(runs["status"]) == {"FINISHED"}
    for run_id in runs["run_id"]:
        assert epochs_logged(client, run_id) == list(range(1, epochs + 1))


@pytest.fixture(scope="module")
def confirmed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A 3-trial search of 2 epochs, then its confirmation (top 2 x 2 seeds), killed once."""
    root = tmp_path_factory.mktemp("confirm")
    tiny, storage = write_tiny(root), root / "hpo"
    searched = run_cli([*common(tiny, storage), "--num-samples", "3", "--max-epochs", "2", "--grace-period", "2",
                        "--name", "s"], root, timeout=400)
    assert searched.returncode == 0, searched.stdout[-3000:]
    args = ["s", "--storage-path", str(storage), "--top", "2", "--seeds", "2", "--max-concurrent", "1"]
    out = kill_then_resume(CONFIRM, args, storage / "s" / "confirm", root, ["s", "--storage-path", str(storage)])
    runs, client = runs_of(f"sqlite:///{storage}/mlflow.db", "s")
    return {"storage": storage, "out": out, "runs": runs, "client": client}


def test_confirmation_gives_intervals_a_choice_and_a_verdict(confirmed: dict) -> None:
    report = confirmed["storage"] / "s" / "report"
    table = pd.read_parquet(report / "confirm.parquet")
    assert list(table["finished"]) == [2, 2] and set(table["cell"]) == {"rank1", "rank2"}
    per_run = pd.read_parquet(report / "confirm_runs.parquet")
    assert len(per_run) == 4 and sorted(per_run["seed"]) == [1, 1, 2, 2]
    for _, row in table.iterrows():
        runs = per_run[per_run["cell"] == row["cell"]]
        for column, name in (("val_acc", "val/acc"), ("best_val_acc", "val/acc (best-val epoch)"),
                             ("test_acc", "test/acc (final epoch)"), ("best_test_acc", "test/acc (best-val epoch)")):
            expect = interval(runs[column])
            assert row[f"{name}/mean"] == pytest.approx(expect["mean"])
            assert row[f"{name}/lo"] == pytest.approx(expect["lo"]) and row[f"{name}/hi"] == pytest.approx(expect["hi"])
    # chosen on validation only: the highest mean val/acc at the best-val epoch (the search's epoch rule)
    chosen = table.loc[table["val/acc (best-val epoch)/mean"].idxmax(), "cell"]
    text = (report / "confirm.md").read_text()
    assert f"Chosen on validation: {chosen}" in text and "95% Student-t intervals" in text
    assert f"chosen on validation: {chosen}" in confirmed["out"]
    verdict = json.loads((report / "confirm.json").read_text())
    assert verdict["epoch_rule"] == "best" and len(verdict["paired"]) == 2 and verdict["paired"][0]["n"] == 2
    assert "paired t-test p = " in text and "do not tell" not in text and "2 of 2 seeds finished" in text
    # the confirmed configurations are the search's top 2 by the epoch rule's val/acc among finished trials
    search_trials = pd.read_parquet(report / "trials.parquet")
    finished = search_trials[search_trials["epochs"] == 2].drop_duplicates(["lr", "warmup", "tau"])
    assert sorted(table["search_val_acc"]) == sorted(finished["best_val_acc"].nlargest(2))


def test_confirmation_runs_are_children_once_each_and_logged_to_the_parent(confirmed: dict) -> None:
    runs, client = confirmed["runs"], confirmed["client"]
    parent = runs[runs["tags.role"] == "search"].iloc[0]
    children = runs[runs["tags.role"] == "confirm"]
    assert set(children["tags.mlflow.parentRunId"]) == {parent["run_id"]}
    each_run_once(children, client, 4, 2)
    assert sorted(children["tags.seed"].astype(int)) == [1, 1, 2, 2]
    assert parent["tags.confirm.chosen"] in {"rank1", "rank2"}
    artifacts = {a.path for a in client.list_artifacts(parent["run_id"], "confirm")}
    assert {"confirm/confirm.md", "confirm/confirm.parquet"} <= artifacts
    # the confirmation does not move the search's best (it ranks the searched trials)
    assert parent["metrics.best/val_acc"] == runs[runs["tags.role"] == "trial"]["metrics.best/val_acc"].max()


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """2 rows (Fashion-MNIST present, CIFAR-10 absent) x 2 methods x 2 seeds, killed once."""
    root = tmp_path_factory.mktemp("reproduce")
    tiny, storage = write_tiny(root), root / "hpo"
    (root / "paper.csv").write_text("dataset,labelled,partial_rate,method,accuracy\nfmnist,20,0.3,spmi,90.5\n")
    args = ["--datasets", "fmnist,cifar10", "--methods", "spmi,proden_fixmatch", "--setting", "fmnist:20:0.3",
            "--setting", "cifar10:20:0.3", "--data-root", f"fmnist={tiny['data']}", "--data-root",
            f"cifar10={root / 'absent'}", "--no-verify-data", "--val-size", "50", "--unlabelled-size", "100",
            "--set", "batch_size=16", "--set", "eval_batch_size=64", "--seeds", "2", "--epochs", "2",
            "--paper-numbers", str(root / "paper.csv"), "--storage-path", str(storage), "--name", "t",
            "--max-concurrent", "1"]
    out = kill_then_resume(REPRODUCE, args, storage / "t", root, ["--storage-path", str(storage), "--resume"])
    runs, client = runs_of(f"sqlite:///{storage}/mlflow.db", "reproduce")
    return {"storage": storage, "out": out, "runs": runs, "client": client}


def test_reproduce_renders_the_table_with_the_missing_cell_skipped(reproduced: dict) -> None:
    folder = reproduced["storage"] / "t" / "table"
    for name in ("table.md", "table.csv", "table.parquet", "table.png"):
        assert (folder / name).is_file(), name
    frame = pd.read_parquet(folder / "table.parquet")
    ran, skipped = frame[frame["status"] == "ran"], frame[frame["status"] == "skipped"]
    assert sorted(ran["method"]) == ["proden_fixmatch", "spmi"] and set(ran["dataset"]) == {"fmnist"}
    assert set(ran["n"]) == {2} and set(frame["epochs"]) == {2}
    assert sorted(skipped["method"]) == ["proden_fixmatch", "spmi"] and set(skipped["dataset"]) == {"cifar10"}
    assert all("CIFAR-10 not found" in r for r in skipped["reason"])
    assert ran["best"].sum() == 1 and ran.loc[ran["best"], "test_acc_mean"].iloc[0] == ran["test_acc_mean"].max()
    runs = pd.read_parquet(folder / "runs.parquet")
    for row in ran.itertuples():
        accs = runs[runs["cell"] == f"fmnist-l20-p0.3-{row.method}"]["test_acc"] * 100
        assert row.test_acc_mean == pytest.approx(accs.mean()) and row.test_acc_std == pytest.approx(accs.std())
    spmi = ran[ran["method"] == "spmi"].iloc[0]
    # 50 held-out and 100 unlabelled images: not the paper's protocol, so no difference to its number
    assert spmi["paper"] == 90.5 and math.isnan(spmi["diff"]) and not spmi["paper_protocol"]
    assert set(ran["protocol"]) == {"l=20, p=0.3; 50 held out for validation; 100 unlabelled"}
    assert math.isnan(ran[ran["method"] == "proden_fixmatch"]["paper"].iloc[0])
    text = (folder / "table.md").read_text()
    assert "budget 2 epochs" in text and "| dataset | l | p | spmi | proden_fixmatch |" in text
    assert "paper 90.50, another protocol: no Δ" in text and "paper n/a" in text and "**" in text
    assert "cifar10 l=20 p=0.3 (spmi, proden_fixmatch): CIFAR-10 not found" in text
    assert "| cifar10 | 20 | 0.3 | skipped | skipped |" in reproduced["out"]


def test_reproduce_runs_are_one_experiment_once_each(reproduced: dict) -> None:
    runs, client = reproduced["runs"], reproduced["client"]
    table = runs[runs["tags.role"] == "reproduce-table"]
    children = runs[runs["tags.role"] == "reproduce"]
    assert len(table) == 1 and table["status"].iloc[0] == "FINISHED"
    each_run_once(children, client, 4, 2)
    assert set(children["tags.config_from"]) == {"paper"} and set(children["tags.row"]) == {"fmnist / 20 / 0.3"}
    assert set(children["params.method"]) == {"spmi", "proden_fixmatch"} and set(children["params.epochs"]) == {"2"}
    spmi = children[children["params.method"] == "spmi"]
    assert set(spmi["params.warmup"]) == {"10"} and set(spmi["params.score"]) == {"kl"}  # the paper's values
    artifacts = {a.path for a in client.list_artifacts(table["run_id"].iloc[0], "table")}
    assert {"table/table.md", "table/table.csv", "table/table.png"} <= artifacts


def test_interval_is_the_student_t_interval_of_the_mean() -> None:
    s = interval([1.0, 2.0, 3.0])
    assert s["n"] == 3 and s["mean"] == 2.0 and s["std"] == 1.0
    assert s["hi"] - 2.0 == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    one = interval([0.5, float("nan")])
    assert one["n"] == 1 and math.isnan(one["lo"])


@pytest.mark.parametrize("argv, words", [
    (["nosuch", "--storage-path", "{tmp}"], "holds no search"),
    (["--config-from", "fmnist/spmi=elsewhere"], "the source is paper, code or search:NAME"),
    (["--datasets", "fmnist", "--setting", "fmnist:4000"], "write DATASET:L:P"),
    (["--datasets", "fmnist", "--setting", "fmnist:20:0.3", "--val-size", "50", "--config-from",
      "fmnist/spmi=search:none"], "holds no search"),
    (["--resume"], "--resume: no table under"),
    (["--datasets", "fmnist", "--setting", "fmnist:20:0.3", "--val-size", "50", "--tracking-uri",
      "http://alice:s3cr3t@127.0.0.1:1"], "--tracking-uri http://alice:***@127.0.0.1:1 carries a password"),
])
def test_bad_input_is_one_line_before_ray_starts(argv: list[str], words: str, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    main = confirm.main if argv[0] == "nosuch" else reproduce.main
    if main is reproduce.main:
        datagen_root = write_tiny(tmp_path)["data"]
        argv += ["--storage-path", str(tmp_path / "hpo"), "--data-root", str(datagen_root), "--no-verify-data"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and words in err and "\n" not in err, err
    import ray
    assert not ray.is_initialized()


def test_an_interrupted_driver_says_how_to_continue(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture) -> None:
    """Search, confirmation and table, stopped with runs left, print the command that
    continues each (exit 130), before any MLflow work."""
    from types import SimpleNamespace

    from tuning.driver import cost_watch, runner
    states = {"a": "TERMINATED", "b": "ERROR", "c": "PENDING"}
    monkeypatch.setattr(cost_watch, "budget_reached", lambda: False)
    plan = SimpleNamespace(dataset="fmnist", method="spmi", storage_path="s3://b/hpo", storage_endpoint="http://m:9000",
                           name="s1", num_samples=4)
    assert runner.finish(plan, states) == 130
    assert capsys.readouterr().out == ("search interrupted (2/4 trials done); continue it with:\n  python "
                                       "tuning/search.py --dataset fmnist --method spmi --storage-path s3://b/hpo "
                                       "--storage-endpoint http://m:9000 --name s1 --resume\n")
    grid = SimpleNamespace(num_trials=6, storage_path="hpo", name="t1", extra=SimpleNamespace(skipped=()),
                           tracking_uri="", parent_run_id="")
    for module in (confirm, reproduce):
        monkeypatch.setattr(module, "run_grid", lambda *a: states)
        monkeypatch.setattr(module, "all_done", lambda *a: False)
    monkeypatch.setattr(confirm, "prepare", lambda args: (grid, SimpleNamespace(name="s1", storage_path="hpo"), True))
    monkeypatch.setattr(reproduce, "prepare", lambda args: (grid, True))
    monkeypatch.setattr(reproduce.mlflow_log, "reopen", lambda *a: None)
    assert confirm.main(["s1", "--storage-path", "hpo"]) == 130
    assert capsys.readouterr().out == ("confirmation interrupted (2/6 runs done); continue it with:\n  python "
                                       "tuning/confirm.py s1 --storage-path hpo --resume\n")
    assert reproduce.main(["--resume"]) == 130
    assert capsys.readouterr().out == ("table interrupted (2/6 runs done); continue it with:\n  python "
                                       "tuning/reproduce.py --storage-path hpo --name t1\n")
