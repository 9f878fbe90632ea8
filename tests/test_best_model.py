"""A trial keeps its best-val/acc epoch in every checkpoint (also after later, worse
epochs and across a resume); the published MLflow model is that network, and
``tuning/evaluate.py`` gives back the trial's best-epoch test accuracy (no Ray cluster:
``tune.report`` is captured)."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from datagen import write_idx_fmnist
from spmi.config import TrainConfig
from spmi.data import load_dataset
from spmi.trainer import Trainer
from tuning.cli import evaluate
from tuning.record import mlflow_log
from tuning.results import publish
from tuning.trial import run as trial_run
from tuning.trial import strategy
from tuning.trial.backend import TrainerBackend
from tuning.trial.best import BestEpoch

FAKE_VAL = [0.50, 0.80, 0.60, 0.70]   # epoch 2 is the best; later epochs are worse


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fmnist")
    write_idx_fmnist(root, n_train=300, n_test=60)
    return root


def config(root: Path, epochs: int = 4) -> TrainConfig:
    return TrainConfig(dataset="fmnist", labelled=20, val_size=40, unlabelled_size=64, batch_size=16, epochs=epochs,
                       eval_batch_size=32, data_root=str(root), verify_data=False,
                       options={"warmup": 1})


class Captured:
    """``tune.report`` stand-in: keeps a copy of every reported checkpoint folder."""

    def __init__(self, folder: Path):
        self.folder, self.reports = folder, []

    def __call__(self, metrics, checkpoint=None):
        copy = self.folder / f"report_{len(self.reports)}"
        shutil.copytree(checkpoint.path, copy)
        self.reports.append((metrics, copy))


def train(cfg: TrainConfig, data, monkeypatch, folder: Path, best: BestEpoch, trainer: Trainer | None = None,
          epochs: int | None = None):
    """Train with the trial reporter; val/acc replaced by FAKE_VAL (test/acc stays real)."""
    captured = Captured(folder)
    monkeypatch.setattr(strategy.tune, "report", captured)
    run = SimpleNamespace(run_id="run", log_epoch=lambda record, step: None)
    trainer = trainer or Trainer(cfg, data)
    reporter = trial_run.EpochReporter(run, TrainerBackend(trainer, best), strategy.LocalStrategy())
    weights = {}
    for _ in range(epochs or cfg.epochs - trainer.epoch):
        metrics = trainer.train_epoch()
        metrics["val/acc"] = FAKE_VAL[metrics["epoch"]]
        weights[trainer.epoch] = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        reporter(metrics)
    return trainer, captured, weights


def test_best_epoch_kept_after_worse_epochs_and_across_resume(root, tmp_path, monkeypatch):
    cfg = config(root)
    data = load_dataset("fmnist", root, verify=False)
    trainer, captured, weights = train(cfg, data, monkeypatch, tmp_path, BestEpoch(), epochs=3)
    metrics, last = captured.reports[-1]
    assert metrics["epoch"] == 3 and metrics["best/epoch"] == 2 and metrics["best/val_acc"] == 0.80
    best = BestEpoch.load(last)
    assert best.epoch == 2 and best.val_acc == 0.80
    assert all(torch.equal(best.weights[k], weights[2][k]) for k in weights[2])
    assert not all(torch.equal(best.weights[k], weights[3][k]) for k in weights[3])
    # resume from the last checkpoint: the best epoch travels with it
    resumed = Trainer(cfg, data)
    backend = TrainerBackend(resumed)
    run_id = trial_run.restore(backend, SimpleNamespace(as_directory=lambda: _dir(last)))
    restored = backend.best
    assert run_id == "run" and restored.epoch == 2
    _, captured, _ = train(cfg, data, monkeypatch, tmp_path / "after", restored, trainer=resumed)
    assert captured.reports[-1][0]["best/epoch"] == 2  # epoch 4 (0.70) does not beat epoch 2
    assert BestEpoch.load(captured.reports[-1][1]).epoch == 2


def test_published_model_gives_the_best_epoch_test_accuracy(root, tmp_path, monkeypatch):
    cfg = config(root, epochs=3)
    data = load_dataset("fmnist", root, verify=False)
    _, captured, _ = train(cfg, data, monkeypatch, tmp_path, BestEpoch())
    best = BestEpoch.load(captured.reports[-1][1])
    recorded_test = captured.reports[1][0]["test/acc"]   # the real test accuracy at epoch 2
    assert best.epoch == 2 and best.test_acc == recorded_test

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    exp = mlflow_log.ensure_experiment(uri, "publish", (tmp_path / "artifacts").as_uri())
    run_id = mlflow_log.client(uri).create_run(exp).info.run_id
    mlflow_log.terminate(uri, run_id, "FINISHED")
    example = data.test_x[:3].numpy()
    out = publish.publish(uri, run_id, best, "spmi-fmnist", example, {"trial_id": "t1", "search": "s"})
    assert out.version == "1" and out.registered_uri == "models:/spmi-fmnist@best"
    client = mlflow_log.client(uri)
    version = client.get_model_version_by_alias("spmi-fmnist", "best")
    assert version.run_id == run_id and version.tags["trial_id"] == "t1"
    assert client.get_run(run_id).info.status == "FINISHED"

    import mlflow
    with mlflow_log.using(uri):  # publish() leaves the process's MLflow URIs as they were
        info = mlflow.models.get_model_info(out.model_uri)
    assert info.signature is not None and info.signature.inputs.to_dict()[0]["tensor-spec"]["dtype"] == "uint8"
    assert info.saved_input_example_info is not None

    result = evaluate.evaluate("models:/spmi-fmnist@best", uri)
    assert result["total"] == 60 and result["accuracy"] == recorded_test
    assert evaluate.main(["models:/spmi-fmnist@best", "--tracking-uri", uri]) == 0
    assert evaluate.main(["models:/nothing@best", "--tracking-uri", uri]) == 2
    # the same network, loaded back, gives the same logits as the trainer's weights
    with mlflow_log.using(uri):
        model = mlflow.pytorch.load_model("models:/spmi-fmnist@best")
    direct = publish.Classifier.from_best(best)
    with torch.no_grad():
        assert np.array_equal(model(torch.from_numpy(example)).numpy(), direct(torch.from_numpy(example)).numpy())


class _dir:
    """``Checkpoint.as_directory()`` stand-in."""

    def __init__(self, path):
        self.path = path

    def __enter__(self):
        return str(self.path)

    def __exit__(self, *exc):
        return False

