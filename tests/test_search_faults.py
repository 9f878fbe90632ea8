"""Faults during a real search (local Ray, tiny generated Fashion-MNIST): a diverging trial
ends as failed/diverged and is never a result; an MLflow tracking server stopped for 60 s
mid-search and restarted loses no trial and no epoch."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from test_search import SEARCH, common, epochs_logged, kill_session, run_cli, runs_of, write_tiny

DIVERGING_SPACE = """\
method: spmi
dataset: fmnist
params:
  lr:
    paper: 1.0e+30          # the second trial: its loss becomes inf/NaN in the first epoch
    code: 0.05              # the first trial
    distribution: loguniform
    low: 0.01
    high: 1.0e+30
  warmup:
    paper: 1
    distribution: int
    low: 0
    high: 1
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_tiny(tmp_path_factory.mktemp("tiny"))


def test_a_diverging_trial_fails_and_is_never_best(tiny: dict[str, Path], tmp_path: Path) -> None:
    space = tmp_path / "diverging.yaml"
    space.write_text(DIVERGING_SPACE)
    storage = tmp_path / "hpo"
    done = run_cli([*common(tiny, storage), "--space", str(space), "--num-samples", "2", "--max-epochs", "2",
                    "--name", "div"], tmp_path, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "1 of 2 trials diverged" in done.stdout

    runs, client = runs_of(f"sqlite:///{storage}/mlflow.db", "div")
    trials = runs[runs["tags.role"] == "trial"]
    bad = trials[trials["params.lr"] == "1e+30"]
    good = trials[trials["params.lr"] == "0.05"]
    assert len(bad) == 1 and len(good) == 1
    assert bad["status"].iloc[0] == "FAILED" and bad["tags.diverged"].iloc[0] == "true"
    assert bad["tags.tune_status"].iloc[0] == "ERROR"
    assert set(runs["status"]) <= {"FINISHED", "FAILED"}
    bad_id = bad["run_id"].iloc[0]
    assert epochs_logged(client, bad_id) == []  # the diverged epoch is no record
    assert len(client.get_metric_history(bad_id, "diverged_at_epoch")) == 1  # Tune's retry did not train it
    parent = runs[runs["tags.role"] == "search"]
    assert parent["tags.best_trial_id"].iloc[0] == good["tags.trial_id"].iloc[0]

    import pandas as pd
    table = pd.read_parquet(storage / "div" / "report" / "trials.parquet")
    assert sorted(table["status"]) == ["diverged", "finished"]
    assert "| diverged |" in (storage / "div" / "report" / "trials.md").read_text()

    # Optuna was told the diverged trial failed, and the good one completed
    import optuna

    from tuning.record import optuna_study
    url = optuna_study.default_storage(str(storage))
    study = optuna.load_study(study_name="div", storage=optuna_study.storage(url))
    states = sorted(t.state.name for t in study.trials)
    assert states == ["COMPLETE", "FAIL"]


# ------------------------------------------------------------------ MLflow outage


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(folder: Path, port: int) -> subprocess.Popen:
    log_path = folder / f"server-{time.monotonic_ns()}.log"
    log = open(log_path, "w")  # noqa: SIM115  (the server's)
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{folder}/mlflow.db",
         "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 180
    while True:
        with contextlib.suppress(OSError), urllib.request.urlopen(f"http://127.0.0.1:{port}/health",
                                                                  timeout=2) as reply:
            if reply.status == 200:
                break
        assert server.poll() is None, log_path.read_text()[-2000:]
        assert time.monotonic() < deadline, "the MLflow server did not answer /health"
        time.sleep(0.5)
    import mlflow
    mlflow.tracking.MlflowClient(f"http://127.0.0.1:{port}").search_experiments(max_results=1)  # its API answers
    return server


def stop_server(server: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(30)
    except subprocess.TimeoutExpired:
        kill_session(server.pid)
        server.wait(30)
    kill_session(server.pid)  # the server's workers


def test_a_tracking_server_outage_loses_nothing(tiny: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "mlflow"
    folder.mkdir()
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    storage = tmp_path / "hpo"
    server = start_server(folder, port)
    driver = None
    try:
        args = [*common(tiny, storage, unlabelled=200), "--num-samples", "2", "--max-epochs", "6",
                "--tracking-uri", uri, "--name", "outage"]
        driver = subprocess.Popen([sys.executable, str(SEARCH), *args], cwd=tmp_path, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, start_new_session=True)
        deadline = time.monotonic() + 300
        while not list((storage / "outage").glob("trial_*/checkpoint_000000")):
            assert driver.poll() is None, driver.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "no trial finished an epoch in time"
            time.sleep(0.2)
        stop_server(server)  # mid-search: both trials have epochs left
        assert driver.poll() is None
        time.sleep(60)
        assert driver.poll() is None, driver.stdout.read()[-3000:]  # the search waited
        server = start_server(folder, port)
        out, _ = driver.communicate(timeout=600)
        assert driver.returncode == 0, out[-3000:]
        assert "best settings: " in out

        import mlflow
        mlflow.set_tracking_uri(uri)
        runs = mlflow.search_runs(experiment_names=["outage"])
        assert len(runs) == 3 and set(runs["status"]) == {"FINISHED"}, runs[["status", "tags.role"]]
        client = mlflow.tracking.MlflowClient(uri)
        for _, run in runs[runs["tags.role"] == "trial"].iterrows():
            assert epochs_logged(client, run["run_id"]) == [1, 2, 3, 4, 5, 6]
            assert run["tags.tune_status"] == "TERMINATED"
        from ray.tune import ExperimentAnalysis
        assert {t.status for t in ExperimentAnalysis(str(storage / "outage")).trials} == {"TERMINATED"}
    finally:
        if driver is not None:
            kill_session(driver.pid)
        stop_server(server)
