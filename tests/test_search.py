"""End to end: the search CLI on tiny generated Fashion-MNIST files (CPU, local Ray
started by the search itself), its MLflow records, a SIGKILLed driver resumed, and
bad input refused before Ray starts."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import datagen
from spmi.config import TrainConfig
from spmi.methods.spmi import SPMIOptions
from tuning.cli import search
from tuning.record import mlflow_log

SEARCH = Path(__file__).resolve().parent.parent / "tuning" / "search.py"  # the script (a shim over tuning.cli.search)
SPACE = """\
method: spmi
dataset: fmnist
params:
  lr:
    paper: 0.05
    distribution: loguniform
    low: 0.01
    high: 0.1
  warmup:
    paper: 1
    distribution: int
    low: 0
    high: 1
  tau:
    paper: 3.0
    distribution: uniform
    low: 1.0
    high: 5.0
"""


def write_tiny(root: Path) -> dict[str, Path]:
    """Tiny Fashion-MNIST files and the search space above, under ``root``."""
    datagen.write_idx_fmnist(root / "data", 300, 60)
    (root / "space.yaml").write_text(SPACE)
    return {"data": root / "data", "space": root / "space.yaml"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_tiny(tmp_path_factory.mktemp("tiny"))


def common(tiny: dict[str, Path], storage: Path, unlabelled: int = 100) -> list[str]:
    return ["--dataset", "fmnist", "--space", str(tiny["space"]), "--data-root", str(tiny["data"]),
            "--no-verify-data", "--labelled", "20", "--val-size", "50", "--unlabelled-size", str(unlabelled),
            "--set", "batch_size=16", "--set", "eval_batch_size=64", "--storage-path", str(storage)]


def kill_session(sid: int) -> None:
    """SIGKILL what is left of a process session (a killed driver's Ray processes)."""
    out = subprocess.run(["ps", "-eo", "pid=,sid="], capture_output=True, text=True).stdout
    for line in out.splitlines():
        pid, s = map(int, line.split())
        if s == sid and pid != os.getpid():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def run_cli(args: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    proc = subprocess.Popen([sys.executable, str(SEARCH), *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        kill_session(proc.pid)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")


def checkpoints_in_snapshot(text: str | bytes) -> dict[str, tuple[str, int]]:
    """Trial id -> (Tune status, index of its latest checkpoint) of the trials with a
    checkpoint in an experiment-state snapshot (the file's text): what a restore resumes
    them from. (Reads Tune's own record of the checkpoints.)"""
    from ray.tune.trainable.metadata import _TrainingRunMetadata
    out = {}
    for trial_json, meta_json in json.loads(text)["trial_data"]:
        trial = json.loads(trial_json)
        manager = _TrainingRunMetadata.from_json_state(meta_json).checkpoint_manager
        latest = manager.latest_checkpoint_result if manager is not None else None
        if latest is not None:
            out[trial["trial_id"]] = (trial["status"], int(latest.checkpoint.path.rsplit("_", 1)[-1]))
    return out


def wait_for_resumable(folder: Path, proc: subprocess.Popen, epochs: int | None = None, to_go: int = 0) -> set[str]:
    """Until the newest experiment-state snapshot in ``folder`` holds a trial with a
    checkpoint (with ``epochs``: a running one with at least ``to_go`` of its ``epochs``
    left, so a kill now leaves it to resume from that checkpoint, however slowly the machine
    runs); returns those trials."""
    deadline = time.monotonic() + 600  # a hang guard, not a condition of the test
    while True:
        assert proc.poll() is None, "the driver ended before it could be killed"
        assert time.monotonic() < deadline, "no checkpointed trial in a snapshot"
        states = sorted(folder.glob("experiment_state-*.json"))
        try:
            held = checkpoints_in_snapshot(states[-1].read_text()) if states else {}
        except ValueError:  # read while Tune writes it
            held = {}
        found = {t for t, (status, index) in held.items()
                 if epochs is None or (status == "RUNNING" and index + 1 + to_go <= epochs)}
        if found:
            return found
        time.sleep(0.2)


def runs_of(uri: str, name: str):
    import mlflow
    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(experiment_names=[name]), mlflow.tracking.MlflowClient(uri, registry_uri=uri)


def epochs_logged(client, run_id: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, "epoch"))


@pytest.fixture(scope="module")
def searched(tiny: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One 3-trial search (grace 2 of 3 epochs, so ASHA may stop trials) shared by the
    tests below: its storage, output and MLflow runs."""
    root = tmp_path_factory.mktemp("e2e")
    storage = root / "hpo"
    done = run_cli([*common(tiny, storage), "--num-samples", "3", "--max-epochs", "3", "--grace-period", "2",
                    "--reduction-factor", "2", "--name", "e2e"], root, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:]
    uri = f"sqlite:///{storage}/mlflow.db"
    runs, client = runs_of(uri, "e2e")
    return {"storage": storage, "stdout": done.stdout, "uri": uri, "runs": runs, "client": client,
            "parent": runs[runs["tags.role"] == "search"], "children": runs[runs["tags.role"] == "trial"]}


def test_three_trial_search_end_to_end(searched: dict, tiny: dict[str, Path]) -> None:
    storage, stdout, runs, client = searched["storage"], searched["stdout"], searched["runs"], searched["client"]
    from spmi.data import files_checksum
    reference = files_checksum(datagen.md5_table(tiny["data"]))  # --no-verify-data: the driver's files
    checksums = [set(searched[role]["tags.data_checksum"]) for role in ("parent", "children")]
    assert checksums == [{reference}, {reference}]  # the trials' nodes checked theirs against it
    assert "best settings: lr=" in stdout and "report: " in stdout
    assert f"mlflow ui --backend-store-uri sqlite:///{storage}/mlflow.db --host 127.0.0.1" in stdout
    assert f"optuna-dashboard sqlite:///{storage}/optuna.db" in stdout

    parent, children = searched["parent"], searched["children"]
    assert len(parent) == 1 and len(children) == 3
    assert set(runs["status"]) == {"FINISHED"}
    assert set(children["tags.mlflow.parentRunId"]) == {parent["run_id"].iloc[0]}
    expected = {f.name for f in dataclasses.fields(TrainConfig)} - {"options"}
    expected |= {f.name for f in dataclasses.fields(SPMIOptions)}
    for _, run in children.iterrows():
        params = {c[len("params."):] for c in runs.columns if c.startswith("params.") and isinstance(run[c], str)}
        assert expected <= params, expected - params
        epochs = int(run["tags.epochs_trained"])
        assert epochs_logged(client, run["run_id"]) == list(range(1, epochs + 1))
        assert (epochs < 3) == (run["tags.stopped_early"] == "true")
        assert len(client.get_metric_history(run["run_id"], "cand/lab_size")) == epochs
        # the test set only where the trial may end: ASHA's rung (epoch 2) and the last epoch
        for key in ("test/acc", "best/test_acc"):
            assert sorted(m.step for m in client.get_metric_history(run["run_id"], key)) == [2, 3][:epochs - 1], key
        for tag in ("dataset", "method", "trial_id", "git_commit", "data_checksum", "final_checkpoint"):
            assert run[f"tags.{tag}"], tag
        assert Path(run["tags.final_checkpoint"], "checkpoint.pt").is_file()
        assert Path(run["tags.final_checkpoint"], "best.pt").is_file()
    # the first trial is the space's default point (enqueued)
    first = children[(children["params.lr"] == "0.05") & (children["params.warmup"] == "1")]
    assert len(first) == 1 and first["params.tau"].iloc[0] == "3.0"

    report = storage / "e2e" / "report"
    for name in ("report.md", "trials.md", "trials.parquet", "history.parquet", "learning_curves.png",
                 "accuracy_vs_params.png", "candidate_sets.png"):
        assert (report / name).is_file(), name
    import pandas as pd
    assert len(pd.read_parquet(report / "trials.parquet")) == 3
    artifacts = {a.path for a in client.list_artifacts(parent["run_id"].iloc[0], "report")}
    assert "report/report.md" in artifacts and "report/learning_curves.png" in artifacts
    assert parent["tags.best_trial_id"].iloc[0] in set(children["tags.trial_id"])

    from tuning.cli import report as report_cli  # standalone, on the finished search
    (report / "report.md").unlink()
    assert report_cli.main([str(storage / "e2e"), "--no-mlflow"]) == 0
    assert (report / "report.md").is_file()


REPEAT_SPACE = """\
method: spmi
fixed:
  warmup: 1
params:
  score:          # one choice: every trial trains the same configuration
    paper: official
    distribution: categorical
    choices: [official]
"""


def test_a_reused_trial_process_trains_like_a_fresh_one(tiny: dict[str, Path], tmp_path: Path) -> None:
    """Single-process trials reuse their Ray actor (torch, MLflow and the data are loaded
    once per process): the second trial, run by the first one's process, must give the
    same epochs, nothing carried over from the first."""
    space = tmp_path / "repeat.yaml"
    space.write_text(REPEAT_SPACE)
    args = [*common(tiny, tmp_path / "hpo"), "--space", str(space), "--num-samples", "2", "--max-epochs", "2",
            "--grace-period", "2", "--max-concurrent", "1", "--cpus-per-trial", "1", "--name", "repeat"]
    done = run_cli(args, tmp_path, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:]
    rows = [[json.loads(line) for line in path.read_text().splitlines()]
            for path in sorted((tmp_path / "hpo" / "repeat").glob("trial_*/result.json"))]
    assert len(rows) == 2 and all(len(r) == 2 for r in rows)
    assert rows[0][0]["pid"] == rows[1][0]["pid"]  # the same process ran both trials
    keys = ("epoch", "loss/total", "val/acc", "test/acc", "cand/lab_size", "cand/unl_size")
    first, second = ([{k: r.get(k) for k in keys} for r in trial] for trial in rows)
    assert first == second


def test_optuna_study_is_persisted_and_told_what_each_trial_did(searched: dict) -> None:
    import optuna
    study = optuna.load_study(study_name="e2e", storage=f"sqlite:///{searched['storage']}/optuna.db")
    assert study.user_attrs["method"] == "spmi" and study.user_attrs["max_epochs"] == 3
    assert len(study.trials) == 3
    children = searched["children"]
    for t in study.trials:
        same = (children["params.lr"] == str(t.params["lr"])) & (children["params.tau"] == str(t.params["tau"]))
        run = children[same]
        assert len(run) == 1, t.params
        run = run.iloc[0]
        epochs = int(run["tags.epochs_trained"])
        assert sorted(t.intermediate_values) == list(range(1, epochs + 1))
        history = searched["client"].get_metric_history(run["run_id"], "val/acc")
        assert t.intermediate_values == {m.step: m.value for m in history}
        if epochs < 3:
            assert t.state == optuna.trial.TrialState.PRUNED
        else:
            assert t.state == optuna.trial.TrialState.COMPLETE and t.value == run["metrics.best/val_acc"]
    tpe = searched["parent"].iloc[0]
    assert tpe["params.search.tpe.multivariate"] == "True" and tpe["params.search.tpe.n_startup_trials"] == "2"


def test_best_model_is_registered_and_gives_its_recorded_test_accuracy(searched: dict) -> None:
    from tuning.cli import evaluate
    parent = searched["parent"].iloc[0]
    client = searched["client"]
    version = client.get_model_version_by_alias("spmi-fmnist", "best")
    best_trial = parent["tags.best/trial"]
    assert parent["tags.best_trial_id"] == best_trial == version.tags["trial_id"]
    best_run = searched["children"][searched["children"]["tags.trial_id"] == best_trial].iloc[0]
    assert version.run_id == best_run["run_id"]
    assert float(version.tags["test_acc"]) == parent["metrics.best/test_acc"] == best_run["metrics.best/test_acc"]
    result = evaluate.evaluate("models:/spmi-fmnist@best", searched["uri"])
    assert result["accuracy"] == parent["metrics.best/test_acc"]
    # the command as the search was started: python <its path>, so the evaluation's path beside it
    evaluate_cli = SEARCH.with_name("evaluate.py")
    assert f"python {evaluate_cli} models:/spmi-fmnist@best --tracking-uri {searched['uri']}" in searched["stdout"]


def test_parent_run_carries_the_standard_record(searched: dict) -> None:
    parent, client = searched["parent"].iloc[0], searched["client"]
    assert parent["tags.mlflow.source.git.commit"] == parent["tags.git_commit"].removesuffix("-dirty")
    note = parent["tags.mlflow.note.content"]
    assert f"python {SEARCH} --dataset fmnist" in note and "--num-samples 3" in note and "tau:" in note
    run = client.get_run(parent["run_id"])
    (dataset,) = run.inputs.dataset_inputs
    assert dataset.dataset.name == "fmnist" and dataset.dataset.digest == parent["tags.data_checksum"]
    history = client.get_metric_history(parent["run_id"], "best/val_acc")
    assert history and max(m.value for m in history) == parent["metrics.best/val_acc"]
    assert parent["metrics.best/val_acc"] == searched["children"]["metrics.best/val_acc"].max()
    children = searched["children"]
    # every trial started its system-metrics monitor (whether it sampled before the trial
    # ended depends on timing: tests/test_system_metrics.py forces a sample instead)
    assert set(children[f"tags.{mlflow_log.SYSTEM_METRICS_TAG}"]) == {"10"}
    assert all(len(client.get_run(r).inputs.dataset_inputs) == 1 for r in children["run_id"])
    best = json.loads((searched["storage"] / "e2e" / "report" / "best.json").read_text())
    grace = [i for i in best["importance"] if i["basis"].startswith("val/acc at epoch 2")]
    assert {i["evaluator"] for i in grace} == {"fANOVA", "PED-ANOVA"} and {i["n_trials"] for i in grace} == {3}
    assert "too few" in grace[0]["note"]


def test_importance_needs_two_trials_and_ranks_the_parameters(tiny: dict[str, Path]) -> None:
    import pandas as pd

    from tuning.plan.spaces import load_space
    from tuning.results.importance import fanova
    space = load_space(tiny["space"], "spmi")
    rows = [{"lr": 0.01 * (1 + i), "warmup": i % 2, "tau": 1.0 + i / 3, "val_acc": 0.5 + 0.04 * i} for i in range(8)]
    assert fanova(pd.DataFrame(rows[:1]), space)[0] == {}
    assert "at least 2" in fanova(pd.DataFrame(rows[:1]), space)[1]
    importance, note = fanova(pd.DataFrame(rows), space)
    assert note == "" and set(importance) == {"lr", "warmup", "tau"}
    assert abs(sum(importance.values()) - 1) < 1e-6


def test_report_tables_are_github_markdown() -> None:
    """Numbers to 4 significant digits, NaN/None empty, a '|' escaped, one line per row."""
    import pandas as pd

    from tuning.results.report import markdown_table
    frame = pd.DataFrame({"trial": ["t1", "t|2", None], "lr": [0.1, float("nan"), 1e-7], "n": [1, 2, 3],
                          "ok": [True, False, True]})
    assert markdown_table(frame) == ("| trial | lr | n | ok |\n|---|---|---|---|\n| t1 | 0.1 | 1 | True |\n"
                                     "| t\\|2 |  | 2 | False |\n|  | 1e-07 | 3 | True |\n")
    assert markdown_table(frame.iloc[:0]) == "| trial | lr | n | ok |\n|---|---|---|---|\n"


def test_killed_driver_resumes_every_trial_once(tiny: dict[str, Path], tmp_path: Path) -> None:
    storage = tmp_path / "hpo"
    args = [*common(tiny, storage, unlabelled=200), "--num-samples", "3", "--max-epochs", "10", "--name", "kill"]
    driver = subprocess.Popen([sys.executable, str(SEARCH), *args], cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        resumable = wait_for_resumable(storage / "kill", driver, epochs=10, to_go=2)
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(30)
    finally:
        kill_session(driver.pid)

    resumed = run_cli([*args, "--resume"], tmp_path, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert "resuming " in resumed.stdout

    runs, client = runs_of(f"sqlite:///{storage}/mlflow.db", "kill")
    children = runs[runs["tags.role"] != "search"]
    assert len(runs) == 4 and set(runs["status"]) == {"FINISHED"}
    assert children["tags.trial_id"].nunique() == 3
    resumed_from = []
    for _, run in children.iterrows():
        steps = epochs_logged(client, run["run_id"])
        assert steps == list(range(1, len(steps) + 1)), steps  # every epoch once, none skipped
        if run["tags.trial_id"] in resumable:
            resumed_from += [m.value for m in client.get_metric_history(run["run_id"], "resumed_from_epoch")]
    # the trials the last snapshot held with a checkpoint continued from it
    assert len(resumed_from) == len(resumable) and min(resumed_from) >= 1, (resumed_from, resumable)

    from ray.tune import ExperimentAnalysis
    trials = ExperimentAnalysis(str(storage / "kill")).trials
    assert len(trials) == 3 and {t.status for t in trials} == {"TERMINATED"}
    # the study came back with the searcher: one told trial per Tune trial, none left RUNNING
    # (a trial asked for after the last snapshot is FAIL), every epoch once
    import optuna
    study = optuna.load_study(study_name="kill", storage=f"sqlite:///{storage}/optuna.db")
    told = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert len(told) == 3 and all(t.state != optuna.trial.TrialState.RUNNING for t in study.trials)
    for t in told:
        assert sorted(t.intermediate_values) == list(range(1, max(t.intermediate_values) + 1))


def test_a_driver_killed_before_the_first_snapshot_runs_each_point_once(tiny: dict[str, Path],
                                                                       tmp_path: Path) -> None:
    """Killed once Optuna was asked for the first trial (the space's point), with no Tune
    snapshot yet (its files removed, whenever it was written): the resumed search runs all
    its trials, the point once, and no Optuna trial stays RUNNING."""
    import optuna
    from optuna.trial import TrialState

    from tuning.record import optuna_study
    storage = tmp_path / "hpo"
    args = [*common(tiny, storage), "--num-samples", "2", "--max-epochs", "2", "--name", "early"]
    url = optuna_study.default_storage(str(storage))
    driver = subprocess.Popen([sys.executable, str(SEARCH), *args], cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 600  # a hang guard, not a condition of the test
        # the plan is saved once the study's tables and the study exist: opening the database
        # before that would race the driver creating its tables
        while not ((storage / "early" / "search.json").is_file() and optuna.load_study(
                study_name="early", storage=url).get_trials(states=(TrialState.RUNNING,))):
            assert driver.poll() is None and time.monotonic() < deadline, "no trial was asked for"
            time.sleep(0.2)
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(30)
    finally:
        kill_session(driver.pid)
    for pattern in ("experiment_state-*.json", "searcher-state-*.pkl", "search_gen_state-*.json"):
        for snapshot in (storage / "early").glob(pattern):
            snapshot.unlink()
    assert (storage / "early" / "tuner.pkl").is_file()

    resumed = run_cli([*args, "--resume"], tmp_path, timeout=400)
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    study = optuna.load_study(study_name="early", storage=url)
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    evaluated = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    points = [t for t in evaluated if t.params == {"lr": 0.05, "warmup": 1, "tau": 3.0}]
    assert len(evaluated) == 2 and len(points) == 1, [t.params for t in study.trials]


def bad_inputs(tiny: dict[str, Path], storage: Path) -> dict[str, tuple[list[str], str]]:
    ok = common(tiny, storage)
    bad_space = tiny["space"].with_name("bad.yaml")
    bad_space.write_text(SPACE.replace("high: 5.0", "high: 0.5"))
    return {
        "unknown dataset": (["--dataset", "mnist"], "unknown dataset 'mnist'"),
        "unknown method": ([*ok, "--method", "pll"], "unknown method 'pll'"),
        "missing space file": ([*ok, "--space", str(storage / "none.yaml")], "none.yaml: search-space file not found"),
        "bad space": ([*ok, "--space", str(bad_space)], f"{bad_space}:17: params.tau: empty or reversed range"),
        "missing data": ([*ok, "--data-root", str(storage / "nodata")], "Fashion-MNIST not found"),
        "no validation split": ([*ok, "--val-size", "0"], "--val-size must be > 0"),
        "GPU where none is": ([*ok, "--gpus-per-trial", "1"], "asks for more GPUs than this machine has"),
        "unreachable tracking server": ([*ok, "--tracking-uri", "http://127.0.0.1:1"], "is not reachable"),
        "unknown --set name": ([*ok, "--set", "colour=red"], "--set colour: not a TrainConfig field"),
        "nothing to resume": ([*ok, "--resume"], "--resume: no search of spmi on fmnist"),
        "no such warm start": ([*ok, "--warm-start", "old"], "--warm-start old: no study of that name"),
        "bad Optuna storage": ([*ok, "--optuna-storage", "nosuch://db"], "Optuna storage nosuch://db is not usable"),
    }


@pytest.mark.parametrize("case", ["unknown dataset", "unknown method", "missing space file", "bad space",
                                  "missing data", "no validation split", "GPU where none is",
                                  "unreachable tracking server", "unknown --set name", "nothing to resume",
                                  "no such warm start", "bad Optuna storage"])
def test_bad_input_is_one_line_before_ray_starts(tiny: dict[str, Path], tmp_path: Path, case: str,
                                                 capsys: pytest.CaptureFixture) -> None:
    if case == "GPU where none is":
        import torch
        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU")
    argv, words = bad_inputs(tiny, tmp_path / "hpo")[case]
    code = search.main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: ") and words in err and "\n" not in err, err
    import ray
    assert not ray.is_initialized()
    assert not list((tmp_path / "hpo").glob("*/search.json"))
