"""The search refuses, before Ray starts, what would lose results or give a wrong answer:
non-finite numbers, a budget that cannot exercise the searched parameters, a second
driver, a resume whose MLflow store is gone; MLflow's fast start-up check does not leak
into the trials, and trial logging that fails during an outage is kept and replayed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_search import SPACE, common, write_tiny

from tuning.cli import search
from tuning.record import mlflow_log


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_tiny(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def no_ray(monkeypatch: pytest.MonkeyPatch) -> list:
    """``run_search`` (Ray) replaced: reaching it records the call and returns 0."""
    import tuning.driver.runner
    calls: list = []

    def fake(plan, resumed, address, time_budget=None, forward_secrets=False):
        calls.append((plan, resumed))
        return 0
    monkeypatch.setattr(tuning.driver.runner, "run_search", fake)
    return calls


def one_line(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    code = search.main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def space_with(tiny: dict[str, Path], old: str, new: str) -> str:
    path = tiny["space"].with_name(f"space{abs(hash(new))}.yaml")
    assert old in SPACE
    path.write_text(SPACE.replace(old, new))
    return str(path)


# ------------------------------------------------------------------ non-finite numbers


@pytest.mark.parametrize("case", ["--set nan", "--set inf", "--partial-rate nan", "--gpus-per-trial nan",
                                  "nan low", "inf high", "nan step"])
def test_non_finite_numbers_are_refused(tiny, tmp_path, case, capsys, no_ray) -> None:
    argv = common(tiny, tmp_path / "hpo") + ["--max-epochs", "3"]
    expect = "not a finite number"
    if case == "--set nan":
        argv += ["--set", "momentum=.nan"]
        expect = "momentum=nan is not a finite number"
    elif case == "--set inf":
        argv += ["--set", "weight_decay=inf"]
    elif case == "--partial-rate nan":
        argv += ["--partial-rate", "nan"]
    elif case == "--gpus-per-trial nan":
        argv += ["--gpus-per-trial", "nan"]
    elif case == "nan low":
        argv += ["--space", space_with(tiny, "low: 1.0", "low: .nan")]
        expect = ":17: params.tau: low nan is not a finite number"
    elif case == "inf high":
        argv += ["--space", space_with(tiny, "high: 0.1", "high: .inf")]
        expect = ":8: params.lr: high inf is not a finite number"
    else:
        argv += ["--space", space_with(tiny, "high: 5.0\n", "high: 5.0\n    step: .nan\n")]
        expect = "params.tau: step must be a positive number"
    assert expect in one_line(argv, capsys)
    assert no_ray == []


# ------------------------------------------------------------------ short budget


def test_a_budget_that_never_reaches_the_label_channel_is_refused(tiny, tmp_path, capsys, no_ray) -> None:
    err = one_line(common(tiny, tmp_path / "hpo") + ["--max-epochs", "1"], capsys)
    assert "warmup" in err and "--max-epochs >= 2" in err
    assert no_ray == []
    pop = tmp_path / "pop.yaml"
    pop.write_text("method: pop_fixmatch\ndataset: fmnist\nparams:\n  lr:\n    paper: 0.05\n"
                         "    distribution: loguniform\n    low: 0.01\n    high: 0.1\n")
    err = one_line(common(tiny, tmp_path / "hpo") + ["--method", "pop_fixmatch", "--space", str(pop),
                                                     "--max-epochs", "20"], capsys)
    assert "pop_start" in err and "--max-epochs >= 21" in err


# ------------------------------------------------------------------ the validation set


def test_validation_flags_reach_the_trials(tiny, tmp_path, capsys, no_ray) -> None:
    """A validation set carved from the labelled budget is a validation set (no held-out
    split needed); the flags land in every trial's base config; bad values are one line."""
    argv = common(tiny, tmp_path / "hpo") + ["--max-epochs", "3", "--name", "carved"]
    assert search.main([*argv, "--val-size", "0", "--val-from-labelled", "10"]) == 0
    (plan, _), = no_ray
    assert (plan.base.val_size, plan.base.val_from_labelled, plan.base.val_labels) == (0, 10, "true")
    assert search.main([*argv[:-1], "partial", "--val-labels", "partial"]) == 0
    assert no_ray[1][0].base.val_labels == "partial" and no_ray[1][0].base.val_from_labelled == 0
    assert "--val-from-labelled 20 must be smaller than --labelled 20" in one_line(
        [*argv[:-1], "bad", "--val-from-labelled", "20"], capsys)
    assert "--val-labels partial gives the held-out validation images" in one_line(
        [*argv[:-1], "bad", "--val-labels", "partial", "--val-size", "0", "--val-from-labelled", "10"], capsys)
    assert "--val-size must be > 0 (or --val-from-labelled K > 0)" in one_line([*argv[:-1], "bad", "--val-size", "0"],
                                                                               capsys)
    assert len(no_ray) == 2


# ------------------------------------------------------------------ one driver per search

HOLD = """\
import fcntl, sys, time
from pathlib import Path
folder = Path(sys.argv[1]); folder.mkdir(parents=True, exist_ok=True)
f = open(folder / ".driver.lock", "a+")
fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
print("held", flush=True)
time.sleep(600)
"""


def test_a_second_driver_is_refused_and_a_dead_one_blocks_nothing(tiny, tmp_path, capsys, no_ray) -> None:
    storage = tmp_path / "hpo"
    argv = common(tiny, storage) + ["--max-epochs", "3", "--name", "locked"]
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(storage / "locked")], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        err = one_line(argv, capsys)
        assert "another driver" in err and "locked" in err
        assert no_ray == []
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(30)
    assert search.main(argv) == 0 and len(no_ray) == 1  # the OS released the dead driver's lock


def test_the_driver_holds_the_lock_while_it_runs(tiny, tmp_path, monkeypatch) -> None:
    import tuning.driver.runner
    storage = tmp_path / "hpo"
    seen = []

    def fake(plan, resumed, address, time_budget=None, forward_secrets=False):
        probe = subprocess.run([sys.executable, "-c", HOLD, str(storage / "held")], capture_output=True,
                               text=True, timeout=60)
        seen.append(probe.returncode)
        return 0
    monkeypatch.setattr(tuning.driver.runner, "run_search", fake)
    assert search.main(common(tiny, storage) + ["--max-epochs", "3", "--name", "held"]) == 0
    assert seen and seen[0] != 0  # the probe could not take the lock


# ------------------------------------------------------------------ MLflow


def test_resume_after_the_mlflow_store_was_deleted(tiny, tmp_path, capsys, no_ray) -> None:
    storage = tmp_path / "hpo"
    argv = common(tiny, storage) + ["--max-epochs", "3", "--name", "gone"]
    assert search.main(argv) == 0 and len(no_ray) == 1
    (storage / "mlflow.db").unlink()
    # a new driver process (this one keeps the deleted file open through MLflow's engine cache)
    stub = ("import sys; import tuning.driver.runner as r; r.run_search = lambda *a: 99; "
            "from tuning.cli import search; sys.exit(search.main(sys.argv[1:]))")
    done = subprocess.run([sys.executable, "-c", stub, *argv, "--resume"], capture_output=True, text=True,
                          timeout=300, cwd=Path(__file__).resolve().parent.parent)
    err = done.stderr.strip()
    assert done.returncode == 2, done.stdout + err
    assert err.startswith("error: ") and "\n" not in err and "no longer holds" in err and "gone" in err, err


def test_the_fast_start_up_check_does_not_leak_into_trials(tmp_path, monkeypatch) -> None:
    for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    mlflow_log.check_store(mlflow_log.default_uri(tmp_path))
    with pytest.raises(ValueError, match="not reachable"):
        mlflow_log.check_store("http://127.0.0.1:1")
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ
    assert "MLFLOW_HTTP_REQUEST_TIMEOUT" not in os.environ


def test_trial_logging_survives_an_outage_and_is_replayed(tmp_path, monkeypatch) -> None:
    uri = mlflow_log.default_uri(tmp_path)
    c = mlflow_log.client(uri)
    run_id = c.create_run(c.create_experiment("x")).info.run_id
    spool = tmp_path / "trial" / mlflow_log.SPOOL_FILE
    run = mlflow_log.TrialRun(uri, run_id, new=True, spool=spool)
    real = mlflow_log.log_metrics
    down = {"on": True}

    def flaky(*args, **kwargs):
        if down["on"]:
            raise ConnectionError("tracking server down")
        return real(*args, **kwargs)
    monkeypatch.setattr(mlflow_log, "log_metrics", flaky)
    assert run.log_epoch({"epoch": 1, "val/acc": 0.5}, step=1) is False  # no exception: kept
    assert run.log_epoch({"epoch": 2, "val/acc": 0.6}, step=2) is False
    assert spool.is_file() and len(spool.read_text().splitlines()) == 2
    # the trial dies; its restart (server back) sends what it kept, then goes on
    down["on"] = False
    again = mlflow_log.TrialRun(uri, run_id, new=False, spool=spool)
    assert again.flush() and not spool.exists()
    assert [m.step for m in c.get_metric_history(run_id, "val/acc")] == [1, 2]
    down["on"] = True
    again.log_epoch({"epoch": 3, "val/acc": 0.7}, step=3)
    down["on"] = False
    assert again.log_epoch({"epoch": 4, "val/acc": 0.8}, step=4)  # sends the kept epoch first
    assert [m.step for m in c.get_metric_history(run_id, "val/acc")] == [1, 2, 3, 4] and not spool.exists()
    # a trial that ends during the outage: the driver replays its spool
    down["on"] = True
    again.log_epoch({"epoch": 5, "val/acc": 0.9}, step=5)
    down["on"] = False
    assert mlflow_log.replay_spool(uri, spool) == 1 and not spool.exists()
    assert [m.step for m in c.get_metric_history(run_id, "val/acc")] == [1, 2, 3, 4, 5]


def test_end_of_search_steps_retry_through_an_outage(monkeypatch) -> None:
    monkeypatch.setattr(time, "sleep", lambda s: None)
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 4:
            raise ConnectionError("down")
        return "done"
    assert mlflow_log.outage_retry(flaky, "closing the runs", budget_s=600) == "done" and len(calls) == 4

    def mistake():
        calls.append(1)
        raise KeyError("no such column")
    with pytest.raises(KeyError):  # not an outage: no retry
        mlflow_log.outage_retry(mistake, "closing the runs", budget_s=600)
    assert len(calls) == 5


def test_a_read_only_storage_folder_is_one_line_at_once(tiny, readonly_dir, tmp_path, capsys, no_ray) -> None:
    argv = common(tiny, readonly_dir) + ["--max-epochs", "3", "--tracking-uri", mlflow_log.default_uri(tmp_path)]
    err = one_line(argv, capsys)
    assert "cannot be written" in err and str(readonly_dir) in err
    assert no_ray == []


# ------------------------------------------------------------------ searches of an earlier layout


def test_a_search_of_the_previous_layout_is_refused_in_one_line(tiny, tmp_path, capsys, no_ray) -> None:
    """Its saved Tune state pickles classes by module paths that moved (tuning.optuna_study,
    tuning.callbacks, ...): resuming it is refused before Ray starts, saying what still works."""
    import json
    storage = tmp_path / "hpo"
    argv = common(tiny, storage) + ["--max-epochs", "3", "--name", "old"]
    assert search.main(argv) == 0 and len(no_ray) == 1
    plan_file = storage / "old" / "search.json"
    plan = json.loads(plan_file.read_text())
    assert plan["version"] == 2
    del plan["version"]  # what a plan of the previous layout holds
    plan_file.write_text(json.dumps(plan))
    err = one_line(argv + ["--resume"], capsys)
    assert err == (f"error: {storage / 'old'}: this search was started by an earlier layout of tuning/ (version 1, "
                   f"this one writes 2), whose saved Ray Tune state names modules that do not exist here, so it "
                   f"cannot be resumed; its trials and report stay readable (python tuning/report.py "
                   f"{storage / 'old'}); start a new search with another --name")
    assert len(no_ray) == 1  # Ray never started for it
    plan["version"] = 2
    plan_file.write_text(json.dumps(plan))
    assert search.main(argv + ["--resume"]) == 0 and no_ray[-1][1] is True  # this layout's own resumes


def test_a_grid_of_the_previous_layout_is_refused_in_one_line(tmp_path) -> None:
    import json

    from tuning.plan.grid_plan import load_grid
    folder = tmp_path / "s" / "confirm"
    folder.mkdir(parents=True)
    (folder / "confirm.json").write_text(json.dumps({"name": "confirm", "cells": {}}))  # no version: layout 1
    with pytest.raises(ValueError, match=r"confirm: this grid was started by an earlier layout of tuning/ "
                                         r"\(version 1, .*move the folder away to run it anew$"):
        load_grid(folder / "confirm.json", resuming=True)


@pytest.mark.parametrize("workers", ["0", "-2"])
def test_workers_per_trial_below_one_is_refused(tiny, tmp_path, workers, capsys, no_ray) -> None:
    """(It was silently read as 1.)"""
    err = one_line(common(tiny, tmp_path / "hpo") + ["--workers-per-trial", workers], capsys)
    assert f"--workers-per-trial {workers} must be >= 1" in err and no_ray == []


# ------------------------------------------------------------------ resume: settings, moved study


@pytest.mark.parametrize("flag, value", [("--num-samples", "5"), ("--max-epochs", "4"), ("--grace-period", "2"),
                                         ("--reduction-factor", "7"), ("--seed", "7"), ("--labelled", "30"),
                                         ("--set", "batch_size=32"), ("--epoch-rule", "last")])
def test_a_changed_setting_on_resume_is_refused_naming_it(tiny, tmp_path, capsys, no_ray, flag, value) -> None:
    """Ray restores the trial count, scheduler and sampler as saved: another value would be
    silently dropped, so it is refused; the same value restated resumes."""
    argv = common(tiny, tmp_path / "hpo") + ["--num-samples", "2", "--max-epochs", "3", "--name", "r"]
    assert search.main(argv) == 0
    err = one_line(argv + ["--resume", flag, value], capsys)
    shown = "--set batch_size=32" if flag == "--set" else f"{flag} {value}"
    assert err.startswith(f"error: --resume: {shown}: search r was started with "), err
    assert "drop the flag to resume it" in err and len(no_ray) == 1
    assert search.main(argv + ["--resume", "--seed", "0"]) == 0 and no_ray[-1][1] is True


def test_a_moved_search_finds_its_study_and_follows_a_moved_database(tiny, tmp_path, capsys, no_ray) -> None:
    import json
    import shutil

    from tuning.record import optuna_study
    tracking = ["--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"]   # (the default one stays behind)
    tail = ["--max-epochs", "3", "--name", "m", *tracking]
    assert search.main(common(tiny, tmp_path / "hpo") + tail) == 0
    moved = tmp_path / "elsewhere"
    shutil.move(tmp_path / "hpo", moved)          # the storage path with its optuna.db
    assert search.main(common(tiny, moved) + tail + ["--resume"]) == 0
    url = optuna_study.default_storage(str(moved))
    assert no_ray[-1][0].optuna_storage == url and optuna_study.study_exists(url, "m")
    assert json.loads((moved / "m" / "search.json").read_text())["optuna_storage"] == url
    db = tmp_path / "db" / "optuna.db"            # the database moved on its own
    db.parent.mkdir()
    shutil.move(moved / "optuna.db", db)
    err = one_line(common(tiny, moved) + tail + ["--resume"], capsys)
    assert f"the Optuna storage {url} has no study named 'm'" in err and "pass --optuna-storage URL" in err
    assert not (moved / "optuna.db").exists()     # the check made no empty database
    assert search.main(common(tiny, moved) + tail + ["--resume", "--optuna-storage", f"sqlite:///{db}"]) == 0
    assert no_ray[-1][0].optuna_storage == f"sqlite:///{db}"
    assert json.loads((moved / "m" / "search.json").read_text())["optuna_storage"] == f"sqlite:///{db}"


def test_confirmation_seeds_exclude_the_searchs_training_seed(tiny, tmp_path, capsys, no_ray) -> None:
    """Runs with the seed every trial of the search trained with repeat what chose the
    configurations: refused in one line (the default seeds 1.. do not include 123)."""
    from tuning.cli import confirm
    storage = tmp_path / "hpo"
    assert search.main(common(tiny, storage) + ["--max-epochs", "3", "--name", "c"]) == 0
    assert confirm.main(["c", "--storage-path", str(storage), "--first-seed", "122", "--seeds", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: --first-seed 122 --seeds 3 includes seed 123, the seed search c trained every trial "
                   "with, so those runs repeat what chose the configurations; use seeds the search did not, e.g. "
                   "--first-seed 124")
