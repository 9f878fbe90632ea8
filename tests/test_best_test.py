"""A search trial measures the test set only where it may end: on its best epoch's weights
at ASHA's rung epochs (the trial spec's ``test_epochs``), at its first epoch after a restore and at its
last epoch, whose own weights are tested too; ``best/test_acc`` is the best weights' test
accuracy. The trials run ``train_trial`` itself on a local SQLite MLflow store, without
Ray (``tune`` calls are stood in for); val/acc follows a fixed sequence."""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from datagen import write_idx_fmnist
from spmi.config import resolve
from spmi.data import load_dataset
from spmi.trainer import Trainer
from tuning.cli import search
from tuning.driver import runner
from tuning.plan import cost
from tuning.record import mlflow_log
from tuning.results.trials import best_epoch
from tuning.trial import trainable
from tuning.trial.backend import CHECKPOINT_FILE
from tuning.trial.best import BestTestSchedule

EPOCHS = 6
ACCURACY = Trainer._accuracy


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    """A quick-preset search plan on tiny generated data (its base config is what trials get)."""
    tmp = tmp_path_factory.mktemp("best_test")
    write_idx_fmnist(tmp / "data", n_train=300, n_test=60)
    args = search.build_parser().parse_args([
        "--dataset", "fmnist", "--preset", "quick", "--data-root", str(tmp / "data"), "--no-verify-data",
        "--labelled", "20", "--val-size", "50", "--storage-path", str(tmp / "hpo"), "--name", "t"])
    plan_, _ = search.prepare(args)
    experiment_id = mlflow_log.ensure_experiment(plan_.tracking_uri, "best-test")
    return dataclasses.replace(plan_, experiment_id=experiment_id, parent_run_id=mlflow_log.start_parent(
        plan_.tracking_uri, experiment_id, "t", {}, {}))


def spec_of(plan, test_epochs: tuple[int, ...]):
    """The search's trial spec with ``EPOCHS`` epochs and the given rungs."""
    spec = runner.trial_spec(plan)
    return dataclasses.replace(spec, base=resolve({"epochs": EPOCHS}, spec.base), test_epochs=test_epochs)


class Trial:
    """``tune`` stand-in for one trial: its context, checkpoint and reports (each reported
    checkpoint folder copied); ``kill_after`` epochs ends the process as Tune kills an actor."""

    def __init__(self, folder: Path, checkpoint: Path | None = None, kill_after: int | None = None):
        self.folder, self.checkpoint, self.kill_after = folder, checkpoint, kill_after
        self.reports: list[tuple[dict, Path]] = []
        folder.mkdir(parents=True, exist_ok=True)

    def report(self, metrics, checkpoint=None):
        copy = self.folder / f"epoch_{metrics['epoch']}"
        shutil.copytree(checkpoint.path, copy)
        self.reports.append((metrics, copy))
        if metrics["epoch"] == self.kill_after:
            raise KeyboardInterrupt("killed")

    def patch(self, monkeypatch, trial_dir: Path) -> None:
        ctx = SimpleNamespace(get_trial_id=lambda: "trial1", get_trial_name=lambda: "trial1",
                              get_trial_dir=lambda: str(trial_dir))
        monkeypatch.setattr(trainable.tune, "get_context", lambda: ctx)
        monkeypatch.setattr(trainable.tune, "report", self.report)
        monkeypatch.setattr(trainable.tune, "get_checkpoint",
                            lambda: None if self.checkpoint is None else SimpleNamespace(
                                as_directory=lambda: _Dir(self.checkpoint)))
        monkeypatch.setattr(mlflow_log, "start_system_metrics", lambda *a, **kw: None)


def count_tests(monkeypatch, val: list[float]) -> list[int]:
    """The epoch (1-based) of each test-set evaluation; val/acc replaced by ``val``."""
    calls, evaluated = [], [0]
    validate = Trainer.validate

    def scripted(self, model=None):
        evaluated[0] = self.epoch + 1  # each epoch's evaluation starts with the validation sets
        return {**validate(self, model), "val/acc": val[self.epoch]}

    def accuracy(self, model, x, y):
        if x is self.test_x:
            calls.append(evaluated[0])
        return ACCURACY(self, model, x, y)

    monkeypatch.setattr(Trainer, "validate", scripted)
    monkeypatch.setattr(Trainer, "_accuracy", accuracy)
    return calls


def run_trial(spec, monkeypatch, trial: Trial, trial_dir: Path) -> None:
    trial.patch(monkeypatch, trial_dir)
    with contextlib.suppress(KeyboardInterrupt):   # the kill of ``Trial.kill_after``
        trainable.train_trial({}, spec)


def checkpoint_test_acc(plan, folder: Path) -> float:
    """The test accuracy of the network saved in a reported checkpoint, measured afresh."""
    cfg = spec_of(plan, ()).point({}).config
    trainer = Trainer(cfg, load_dataset("fmnist", cfg.data_root, verify=False))
    trainer.load(folder / CHECKPOINT_FILE)
    return ACCURACY(trainer, trainer.inference_model(), trainer.test_x, trainer.test_y)


def test_search_passes_ashas_rungs_to_its_trials(plan):
    rungs = cost.Asha(plan.max_epochs, plan.grace_period, plan.reduction_factor).rungs()
    assert runner.trial_spec(plan).test_epochs == tuple(rungs) and rungs[0] == plan.grace_period
    assert plan.base.eval_test == "end"   # the trainer itself tests the last epoch only


def test_trial_tests_only_at_the_rungs_and_the_last_epoch(plan, tmp_path, monkeypatch):
    spec = spec_of(plan, (2, 4))
    trial = Trial(tmp_path / "reports")
    calls = count_tests(monkeypatch, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6])  # a new best every epoch
    run_trial(spec, monkeypatch, trial, tmp_path / "trial")
    assert calls == [2, 4, 6]
    records = {m["epoch"]: m for m, _ in trial.reports}
    assert sorted(records) == [1, 2, 3, 4, 5, 6]
    for epoch in (2, 4, 6):   # the best epoch is the current one: one measurement serves both
        assert records[epoch]["best/epoch"] == epoch and records[epoch]["test/epoch"] == epoch - 1
        assert records[epoch]["best/test_acc"] == records[epoch]["test/acc"]
    assert all("best/test_acc" not in records[e] and "test/acc" not in records[e] for e in (1, 3, 5))
    assert records[6]["best/test_acc"] == checkpoint_test_acc(plan, trial.reports[-1][1])


def test_resumed_trial_tests_its_best_weights_at_its_first_epoch(plan, tmp_path, monkeypatch):
    """Killed after epoch 3 (best: epoch 3, not yet tested), restored from that checkpoint:
    epoch 4 (ASHA may decide on a restored trial's first result) tests the epoch-3 weights,
    the rung 5 finds them tested, epoch 6 tests only its own weights."""
    spec = spec_of(plan, (2, 5))
    val = [0.5, 0.6, 0.7, 0.65, 0.66, 0.64]
    first = Trial(tmp_path / "first", kill_after=3)
    calls = count_tests(monkeypatch, val)
    run_trial(spec, monkeypatch, first, tmp_path / "trial")
    assert calls == [2]
    assert "best/test_acc" not in first.reports[-1][0]
    second = Trial(tmp_path / "second", checkpoint=first.reports[-1][1])
    calls = count_tests(monkeypatch, val)
    run_trial(spec, monkeypatch, second, tmp_path / "trial")
    assert calls == [4, 6]
    records = {m["epoch"]: m for m, _ in second.reports}
    assert sorted(records) == [4, 5, 6]
    best_test = checkpoint_test_acc(plan, first.reports[-1][1])   # epoch 3's network
    for epoch in (4, 5, 6):
        assert records[epoch]["best/epoch"] == 3 and records[epoch]["best/test_acc"] == best_test
    # a record whose own weights were not tested carries the best weights' test/acc, named by test/epoch
    assert records[4]["test/acc"] == best_test and records[4]["test/epoch"] == 2
    assert records[6]["test/epoch"] == 5 and records[6]["test/acc"] == checkpoint_test_acc(plan, second.reports[-1][1])


def due(rungs: tuple[int, ...], last: int, resumed: int = 0) -> list[int]:
    at = BestTestSchedule(rungs, last, resumed)
    return [e for e in range(resumed + 1, last + 1) if at.due(e)]


def test_due_epochs():
    assert due((3, 6), 12) == [3, 6, 12]
    assert due((3, 6), 12, resumed=4) == [5, 6, 12]   # restored between rungs
    assert due((3, 6), 12, resumed=1) == [3, 6, 12]   # restored before the first rung
    assert due((), 4) == [4]                           # no ASHA (confirm, reproduce): the last epoch only


def test_report_takes_the_best_epochs_test_accuracy_from_the_last_record():
    """The best-val epoch's own record has no test/acc; the last record's best/test_acc is it.
    Records that tested the best epoch itself (older searches) still give it."""
    new = pd.DataFrame({"epoch": [1, 2, 3, 4], "val/acc": [0.5, 0.7, 0.6, 0.65],
                        "test/acc": [None, 0.68, None, 0.69], "test/epoch": [None, 1, None, 3],
                        "best/epoch": [1, 2, 2, 2], "best/test_acc": [None, 0.68, 0.68, 0.68]})
    assert best_epoch(new) == {"best_score": 0.7, "best_val_acc": 0.7, "best_test_acc": 0.68, "best_epoch": 2}
    new.loc[1, ["test/acc", "test/epoch"]] = None   # the best epoch measured later, at a rung
    new.loc[3, "test/acc"], new.loc[3, "test/epoch"] = 0.66, 1
    assert best_epoch(new)["best_test_acc"] == 0.68
    old = pd.DataFrame({"epoch": [1, 2, 3], "val/acc": [0.5, 0.7, 0.6], "test/acc": [0.4, 0.66, 0.66],
                        "test/epoch": [0, 1, 1]})
    assert best_epoch(old) == {"best_score": 0.7, "best_val_acc": 0.7, "best_test_acc": 0.66, "best_epoch": 2}


class _Dir:
    """``Checkpoint.as_directory()`` stand-in."""

    def __init__(self, path):
        self.path = path

    def __enter__(self):
        return str(self.path)

    def __exit__(self, *exc):
        return False


def test_the_kept_network_is_the_best_by_the_searchs_metric(plan, tmp_path, monkeypatch):
    """With ``--metric val/approx_acc`` the trial keeps (and tests) the epoch of highest
    approximated accuracy, not of highest val/acc; ``best/val_acc`` is that epoch's val/acc."""
    spec = dataclasses.replace(spec_of(plan, ()), metric="val/approx_acc")
    approx = [0.3, 0.6, 0.5, 0.4, 0.2, 0.1]   # best at epoch 2
    val = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]      # val/acc alone would keep epoch 6
    validate = Trainer.validate
    monkeypatch.setattr(Trainer, "validate", lambda self, model=None: {
        **validate(self, model), "val/acc": val[self.epoch], "val/approx_acc": approx[self.epoch]})
    trial = Trial(tmp_path / "reports")
    run_trial(spec, monkeypatch, trial, tmp_path / "trial")
    last = trial.reports[-1][0]
    assert (last["best/epoch"], last["best/score"], last["best/val_acc"]) == (2, 0.6, 0.2)
    assert last["best/test_acc"] == checkpoint_test_acc(plan, trial.reports[1][1])   # epoch 2's network
