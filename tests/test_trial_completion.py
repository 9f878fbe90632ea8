"""A trial that a killed driver had already seen complete is not trained again after
``--resume``: its MLflow run says so, the trainable re-reports the final result, and the
driver callback keeps the first driver's tags (local SQLite MLflow store, no Ray)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tuning.driver.callbacks import CloseTrialRuns
from tuning.record import mlflow_log
from tuning.trial import trainable
from tuning.trial.spec import Tracking


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"  # one store: its set-up is slow
    return uri, mlflow_log.ensure_experiment(uri, "completion")


@pytest.fixture
def store(experiment, request):
    """A trial run (named after the test) with three epochs logged."""
    uri, exp = experiment
    run = mlflow_log.TrialRun.open(uri, exp, request.node.name, "trial", tags={})
    for epoch, acc in ((1, 0.5), (2, 0.6), (3, 0.55)):
        run.log_epoch({"epoch": epoch, "val/acc": acc, "prior": [0.25, 0.75]}, step=epoch)
    return uri, exp, run.run_id, request.node.name


def trial(trial_id, last_result, checkpoint=None):
    return SimpleNamespace(trial_id=trial_id, last_result=last_result, checkpoint=checkpoint)


def test_only_a_closed_run_counts_as_complete(store):
    uri, exp, _, tid = store
    assert mlflow_log.completed_result(uri, exp, tid) is None  # still training
    assert mlflow_log.completed_result(uri, exp, "other") is None
    CloseTrialRuns(uri, exp, max_epochs=10).on_trial_complete(0, [], trial(tid, {"epoch": 3, "val/acc": 0.55}))
    done = mlflow_log.completed_result(uri, exp, tid)
    assert done["epoch"] == 3 and done["val/acc"] == 0.55 and done["prior/1"] == 0.75


def test_restarted_completed_trial_reports_instead_of_training(store, monkeypatch):
    uri, exp, run_id, tid = store
    meta = Tracking(uri, exp, parent_run_id="", search="s")
    reported = []
    monkeypatch.setattr(trainable.tune, "report", lambda metrics, **kw: reported.append(metrics))
    assert trainable.report_if_completed(meta, tid) is False and reported == []
    close = CloseTrialRuns(uri, exp, max_epochs=10)
    close.on_trial_complete(0, [], trial(tid, {"epoch": 3, "val/acc": 0.55}))
    assert trainable.report_if_completed(meta, tid) is True
    assert reported[0]["epoch"] == 3 and isinstance(reported[0]["epoch"], int)
    assert reported[0]["val/acc"] == 0.55
    # the resumed driver completes the trial again from an older snapshot: first tags kept
    close.on_trial_complete(0, [], trial(tid, {"epoch": 2, "val/acc": 0.6}))
    run = mlflow_log.client(uri).get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["epochs_trained"] == "3" and run.data.tags["stopped_early"] == "true"


def test_parent_carries_the_best_trial_so_far(experiment):
    uri, exp = experiment
    parent = mlflow_log.start_parent(uri, exp, "best-so-far", {}, {})
    close = CloseTrialRuns(uri, exp, max_epochs=10, parent_run_id=parent)
    finished = []
    for tid, val, test in (("a", 0.6, 0.55), ("b", 0.5, 0.9), ("c", 0.7, 0.65)):
        close.on_trial_complete(0, finished, trial(tid, {"epoch": 3, "val/acc": val, "best/val_acc": val,
                                                         "best/test_acc": test, "best/epoch": 2}))
        finished.append(SimpleNamespace(status="TERMINATED"))
        data = mlflow_log.client(uri).get_run(parent).data
        best = {"a": ("a", 0.6, 0.55), "b": ("a", 0.6, 0.55), "c": ("c", 0.7, 0.65)}[tid]
        assert (data.tags["best/trial"], data.metrics["best/val_acc"], data.metrics["best/test_acc"]) == best
    steps = [m.step for m in mlflow_log.client(uri).get_metric_history(parent, "best/val_acc")]
    assert steps == [1, 3]   # logged when a trial beat the best, step = trials done
