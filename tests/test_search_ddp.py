"""End to end, DDP trials (``--workers-per-trial 2``: a Ray Train TorchTrainer per trial,
gloo on the CPU) on tiny generated Fashion-MNIST files: a search with its MLflow records,
a SIGKILLed driver resumed from the trial's Train checkpoint, the release of a stopped
trial's workers, GPU requests refused before Ray starts. The searches share one MLflow
store (creating one costs ~10 s)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_search import SEARCH, common, epochs_logged, kill_session, run_cli, runs_of, write_tiny

from tuning.cli import search
from tuning.driver.callbacks import ReleaseTrainGroups
from tuning.plan.settings import TRAIN_RUNS_DIR
from tuning.trial.ddp import PG_KEY, release_placement_group

DDP = ["--workers-per-trial", "2", "--cpus-per-trial", "1"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_tiny(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ddp") / "hpo"


def trial_runs(storage: Path, name: str):
    runs, client = runs_of(f"sqlite:///{storage}/mlflow.db", name)
    return runs, runs[runs["tags.role"] == "trial"], client


def test_ddp_trial_search(tiny: dict[str, Path], storage: Path, tmp_path: Path) -> None:
    """A 2-worker trial, ranks checked identical after every epoch: one FINISHED MLflow
    run with every epoch, the final Train checkpoint, the workers' group reported."""
    done = run_cli([*common(tiny, storage), *DDP, "--check-sync", "--num-samples", "1", "--max-epochs", "3",
                    "--name", "ddp"], tmp_path, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "best settings: lr=" in done.stdout
    assert "StateMismatch" not in done.stdout
    plan = json.loads((storage / "ddp" / "search.json").read_text())
    assert plan["workers_per_trial"] == 2 and plan["check_sync"] is True
    assert plan["max_concurrent"] == int(((os.cpu_count() or 1) + 1) / 2.1)  # (cores + 1 driver CPU) / (2 + 0.1)

    runs, children, client = trial_runs(storage, "ddp")
    assert len(runs) == 2 and len(children) == 1 and set(runs["status"]) == {"FINISHED"}
    parent = runs[runs["tags.role"] == "search"]
    assert parent["params.search.workers_per_trial"].iloc[0] == "2"
    for _, run in children.iterrows():
        assert epochs_logged(client, run["run_id"]) == [1, 2, 3]  # warm-up 1, then 2 SPMI epochs
        assert len(client.get_metric_history(run["run_id"], "cand/unl_size")) == 2
        final = Path(run["tags.final_checkpoint"])
        assert final.parent.parent == storage / "ddp" / TRAIN_RUNS_DIR and final.name == "epoch_0003"
        assert (final / "checkpoint.pt").is_file() and (final / "best.pt").is_file()
        assert client.get_metric_history(run["run_id"], "resumed_from_epoch") == []
    # the DDP trial's best epoch is published from its Train checkpoint
    assert client.get_model_version_by_alias("spmi-fmnist", "best").run_id == children["run_id"].iloc[0]

    from ray.tune import ExperimentAnalysis
    trials = ExperimentAnalysis(str(storage / "ddp")).trials
    assert len(trials) == 1 and trials[0].status == "TERMINATED"
    assert len(trials[0].last_result[PG_KEY]) > 8  # what ReleaseTrainGroups removes


def ddp_trial_resumable(folder: Path) -> bool:
    """Whether a kill now leaves the search in ``folder`` a DDP trial to resume from its Train
    checkpoint: a Train run's checkpoint snapshot (read whole) names its latest checkpoint,
    and the newest experiment-state snapshot holds a running trial."""
    snapshots = list((folder / TRAIN_RUNS_DIR).glob("train-*/checkpoint_manager_snapshot.json"))
    states = sorted(folder.glob("experiment_state-*.json"))
    try:
        saved = any(json.loads(p.read_text()).get("latest_checkpoint_result") for p in snapshots)
        running = bool(states) and any(json.loads(trial)["status"] == "RUNNING"
                                       for trial, _ in json.loads(states[-1].read_text())["trial_data"])
    except ValueError:  # read while being written
        return False
    return saved and running


def test_killed_driver_resumes_ddp_trial_from_its_checkpoint(tiny: dict[str, Path], storage: Path,
                                                             tmp_path: Path) -> None:
    args = [*common(tiny, storage), *DDP, "--num-samples", "1", "--max-epochs", "4", "--name", "kill"]
    driver = subprocess.Popen([sys.executable, str(SEARCH), *args], cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    train_runs = storage / "kill" / TRAIN_RUNS_DIR
    try:
        deadline = time.monotonic() + 600  # a hang guard, not a condition of the test
        while not ddp_trial_resumable(storage / "kill"):
            assert driver.poll() is None, "the search ended before it could be killed"
            assert time.monotonic() < deadline, "no DDP trial checkpointed an epoch"
            time.sleep(0.2)
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(30)
    finally:
        kill_session(driver.pid)
    runs, children, _ = trial_runs(storage, "kill")
    assert len(children) == 1 and children["status"].iloc[0] == "RUNNING"  # killed mid-trial

    resumed = run_cli([*args, "--resume"], tmp_path, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert "resuming " in resumed.stdout

    runs, children, client = trial_runs(storage, "kill")
    assert len(runs) == 2 and set(runs["status"]) == {"FINISHED"}  # no duplicate, none RUNNING
    run_id = children["run_id"].iloc[0]
    assert epochs_logged(client, run_id) == [1, 2, 3, 4]  # every epoch once
    resumed_from = [m.value for m in client.get_metric_history(run_id, "resumed_from_epoch")]
    assert len(resumed_from) == 1 and resumed_from[0] >= 1, resumed_from  # from its checkpoint, not epoch 0

    from ray.tune import ExperimentAnalysis
    trials = ExperimentAnalysis(str(storage / "kill")).trials
    assert len(trials) == 1 and trials[0].status == "TERMINATED"
    assert [p.name for p in train_runs.iterdir()] == [f"train-{trials[0].trial_id}"]
    assert (train_runs / f"train-{trials[0].trial_id}" / "epoch_0004" / "checkpoint.pt").is_file()


def test_ddp_gpus_where_none_are_is_one_line(tiny: dict[str, Path], tmp_path: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    code = search.main([*common(tiny, tmp_path / "hpo"), *DDP, "--gpus-per-trial", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--gpus-per-trial 1 x 2 workers asks for more GPUs" in err and "\n" not in err, err
    code = search.main([*common(tiny, tmp_path / "hpo"), *DDP, "--gpus-per-trial", "0.5"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "each DDP worker needs whole GPUs" in err, err


def test_stopped_trial_releases_its_workers_placement_group() -> None:
    """Tune kills a stopped trial's actor, so its Train run never frees its workers'
    placement group; the driver callback removes it (once)."""
    import ray
    from ray.util.placement_group import placement_group, placement_group_table
    ray.init(num_cpus=1, include_dashboard=False, object_store_memory=128 * 1024**2)
    try:
        pg = placement_group([{"CPU": 1}])
        ray.get(pg.ready(), timeout=60)
        trial = SimpleNamespace(trial_id="t1", last_result={PG_KEY: pg.id.hex(), "epoch": 3})
        ReleaseTrainGroups().on_trial_complete(0, [], trial)
        # removed in Ray's table when the call returns (Ray frees its CPU soon after, on its own)
        assert placement_group_table(pg)["state"] == "REMOVED"
        assert release_placement_group(pg.id.hex()) is False
        ReleaseTrainGroups().on_trial_complete(0, [], trial)  # already gone: nothing to do
        ReleaseTrainGroups().on_trial_error(0, [], SimpleNamespace(trial_id="t2", last_result={}))
        assert placement_group_table(pg)["state"] == "REMOVED"
    finally:
        ray.shutdown()
