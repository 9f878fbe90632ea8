"""A trial keeps its best-val/acc epoch in every checkpoint (also after later, worse
epochs and across a resume); the published MLflow model is that network, holds no
pickle, and ``tuning/evaluate.py`` gives back the trial's best-epoch test accuracy (no Ray
cluster: ``tune.report`` is captured)."""

from __future__ import annotations

import io
import json
import logging
import pickletools
import shutil
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from datagen import write_idx_fmnist
from spmi.config import TrainConfig
from spmi.data import load_dataset
from spmi.models import create_model
from spmi.trainer import Trainer
from tuning.cli import evaluate
from tuning.record import mlflow_log
from tuning.results import publish
from tuning.trial import run as trial_run
from tuning.trial import strategy
from tuning.trial.backend import TrainerBackend
from tuning.trial.best import BestEpoch, NetworkSpec

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


class Logged(logging.Handler):
    """Keeps the messages of a logger (MLflow's loggers do not propagate to pytest's)."""

    def __init__(self, name: str):
        super().__init__(logging.DEBUG)
        self.logger, self.messages = logging.getLogger(name), []

    def emit(self, record):
        self.messages.append(record.getMessage())

    def __enter__(self):
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc):
        self.logger.removeHandler(self)


@pytest.fixture(scope="module")
def published(root, tmp_path_factory):
    """A 3-epoch trial's best epoch (epoch 2) published in a fresh SQLite store; the
    messages MLflow's PyTorch flavour logged while publishing."""
    folder = tmp_path_factory.mktemp("published")
    cfg = config(root, epochs=3)
    data = load_dataset("fmnist", root, verify=False)
    with pytest.MonkeyPatch.context() as monkeypatch:
        _, captured, _ = train(cfg, data, monkeypatch, folder, BestEpoch())
    best = BestEpoch.load(captured.reports[-1][1])
    uri = f"sqlite:///{folder}/mlflow.db"
    exp = mlflow_log.ensure_experiment(uri, "publish", (folder / "artifacts").as_uri())
    run_id = mlflow_log.client(uri).create_run(exp).info.run_id
    mlflow_log.terminate(uri, run_id, "FINISHED")
    example = data.test_x[:3].numpy()
    with Logged("mlflow.pytorch") as logged:
        out = publish.publish(uri, run_id, best, "spmi-fmnist", example, {"trial_id": "t1", "search": "s"})
    return SimpleNamespace(uri=uri, run_id=run_id, best=best, out=out, example=example, logged=logged.messages,
                           recorded_test=captured.reports[1][0]["test/acc"], folder=folder)


def test_published_model_gives_the_best_epoch_test_accuracy(published):
    best, uri, run_id, out, example = (published.best, published.uri, published.run_id, published.out,
                                       published.example)
    assert best.epoch == 2 and best.test_acc == published.recorded_test  # the real test accuracy at epoch 2
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
    assert result["total"] == 60 and result["accuracy"] == published.recorded_test
    assert evaluate.main(["models:/spmi-fmnist@best", "--tracking-uri", uri]) == 0
    assert evaluate.main(["models:/nothing@best", "--tracking-uri", uri]) == 2
    # the same network, loaded back (MLflow's graph and tuning's rebuilt network), gives the trainer's logits
    with mlflow_log.using(uri), publish.pickle_refused():
        graph = mlflow.pytorch.load_model("models:/spmi-fmnist@best")
    rebuilt, _ = publish.load_published("models:/spmi-fmnist@best", uri)
    direct = publish.Classifier.from_best(best)
    x = torch.from_numpy(example)
    with torch.no_grad():
        assert np.array_equal(graph(x).numpy(), direct(x).numpy())
        assert np.array_equal(rebuilt(x).numpy(), direct(x).numpy())
        assert rebuilt(x[:1]).shape == (1, 10)  # any batch size, one image too


# ---------------------------------------------------------------- no pickle in the model

SAFE_GLOBALS = {"torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter", "collections.OrderedDict",
                *(f"torch.{kind}Storage" for kind in ("Byte", "Char", "Short", "Int", "Long", "Float", "Double",
                                                        "Half", "BFloat16", "Bool"))}


def pickle_globals(stream: bytes) -> set[str]:
    """The ``module.name`` globals a pickle stream imports (read with pickletools, never run)."""
    found, strings = set(), []
    for op, arg, _ in pickletools.genops(stream):
        if op.name == "GLOBAL":
            found.add(arg.replace(" ", "."))
        elif op.name == "STACK_GLOBAL":
            assert len(strings) >= 2, "STACK_GLOBAL without literal operands"
            found.add(f"{strings[-2]}.{strings[-1]}")
            strings = []
        elif op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
            strings.append(arg)
        elif op.name not in ("MEMOIZE", "BINPUT", "LONG_BINPUT", "PUT"):
            strings = []
    return found


def classify(name: str, content: bytes, raw: set[str]) -> str:
    """What a file of the model is: 'json', 'text', 'raw tensor', 'weights-only torch
    file' (a zip whose pickles import only tensor rebuilders and load with
    weights_only=True), 'yaml', or 'pt2 archive'; fails on anything else."""
    if name in raw:
        return "raw tensor"
    if zipfile.is_zipfile(io.BytesIO(content)):
        with zipfile.ZipFile(io.BytesIO(content)) as z:
            members = z.namelist()
            if any(m.endswith("archive_format") for m in members):
                return "pt2 archive"
            pickles = [m for m in members if m.endswith(".pkl")]
            for m in pickles:
                unsafe = pickle_globals(z.read(m)) - SAFE_GLOBALS
                assert not unsafe, f"{name}/{m} imports {unsafe}"
        torch.load(io.BytesIO(content), weights_only=True)
        return "weights-only torch file"
    assert not content.startswith(b"\x80"), f"{name} is a pickle"
    text = content.decode("utf-8")  # fails on binary content
    try:
        json.loads(text)
        return "json"
    except ValueError:
        pass
    if name.endswith((".yaml", "MLmodel", "registered_model_meta")):
        yaml.safe_load(text)
        return "yaml"
    assert len(text) < 100, f"{name}: unexpected text"
    return "text"


def model_files(folder: Path) -> dict[str, str]:
    """Every file of a logged model, the members of its pt2 archive included: path -> kind."""
    kinds = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        assert path.suffix not in (".pkl", ".pickle", ".pth", ".cloudpickle"), rel
        kind = classify(rel, path.read_bytes(), set())
        kinds[rel] = kind
        if kind == "pt2 archive":
            with zipfile.ZipFile(path) as z:
                configs = [m for m in z.namelist() if m.endswith("_config.json")]
                raw = {f"{m.rsplit('/', 1)[0]}/{entry['path_name']}" for m in configs
                       for entry in json.loads(z.read(m))["config"].values() if entry.get("use_pickle") is False}
                for m in z.namelist():
                    kinds[f"{rel}!{m}"] = classify(m, z.read(m), raw)
    return kinds


def test_published_model_holds_no_pickle(published):
    import mlflow
    with mlflow_log.using(published.uri):
        folder = Path(mlflow.artifacts.download_artifacts(published.out.model_uri,
                                                          dst_path=str(published.folder / "download")))
        flavor = mlflow.models.get_model_info(published.out.model_uri).flavors["pytorch"]
    kinds = model_files(folder)
    print("\n".join(f"{k}: {v}" for k, v in kinds.items()))
    assert "data/model.pt2" in kinds and flavor["model_data"] == "data"
    assert not any(k.endswith(("model.pth", "pickle_module_info.txt", ".pkl")) for k in kinds)
    assert "cloudpickle" not in (folder / "requirements.txt").read_text()
    assert sum(v == "raw tensor" for v in kinds.values()) >= len(published.best.weights)
    # MLflow's warning about pickled models was not logged
    assert not [m for m in published.logged if "pickle" in m.lower()], published.logged


def test_pickled_model_is_refused_without_unpickling(published, tmp_path, capsys):
    """A model logged as a pickle (the format before pt2) is refused in one line, also when
    its metadata claims a network, and its pickle never runs."""
    import mlflow
    marker = tmp_path / "ran"

    class Trap(nn.Module):  # unpickling it would create ``marker``
        def forward(self, x):
            return x

        def __reduce__(self):
            return Path.touch, (marker,)

    client = mlflow_log.client(published.uri)
    meta = {"dataset": "fmnist", "data_root": str(published.folder), "verify_data": False, "search": "old"}
    run_id = client.create_run(client.get_experiment_by_name("publish").experiment_id).info.run_id
    with mlflow_log.using(published.uri), mlflow.start_run(run_id=run_id), Logged("mlflow.pytorch") as logged:
        for name, extra in (("old", {}), ("claims-network", {"network": publish.network_of(published.best.network)})):
            mlflow.pytorch.log_model(Trap(), name=name, metadata={**meta, **extra}, registered_model_name=name,
                                     serialization_format="pickle", pip_requirements=["torch"])
    assert any("pickle" in m.lower() for m in logged.messages)  # the warning the published model is without
    assert not marker.exists()
    capsys.readouterr()
    assert evaluate.main(["models:/old/1", "--tracking-uri", published.uri]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a pickled model (published before the pt2 format) and is refused" in err
    assert "--resume --name old" in err
    assert evaluate.main(["models:/claims-network/1", "--tracking-uri", published.uri]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Deserializing model using pickle is disallowed" in err
    assert not marker.exists()


def test_wide_resnet_channels_last_bf16_round_trip(tmp_path):
    """pt2 export of a WideResNet (BatchNorm with running statistics, channels_last weights,
    bf16 autocast): published with the spec's example images (no dataset), read back as
    the same network on any batch size."""
    net = create_model("wrn_28_2", 10, 3)
    gen = torch.Generator().manual_seed(0)
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.1, generator=gen)
            module.running_var.uniform_(0.5, 2.0, generator=gen)
    best = BestEpoch()
    best.epoch, best.score, best.val_acc, best.test_acc, best.weights = 1, 0.5, 0.5, 0.25, net.state_dict()
    best.network = NetworkSpec.from_dict({
        "model": "wrn_28_2", "num_classes": 10, "channels": 3, "size": 32, "mean": [0.49, 0.48, 0.45],
        "std": [0.25, 0.24, 0.26], "channels_last": True, "precision": "bf16", "dataset": "cifar10",
        "data_root": str(tmp_path / "absent"), "verify_data": True, "eval_batch_size": 64})
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    exp = mlflow_log.ensure_experiment(uri, "wrn", (tmp_path / "artifacts").as_uri())
    run_id = mlflow_log.client(uri).create_run(exp).info.run_id
    network = publish.network_of(best.network)
    with pytest.raises(ValueError, match="at least 2 example images"):  # one would fix the graph's batch size
        publish.publish(uri, run_id, best, "spmi-cifar10", publish.example_images(network, 1), {})
    out = publish.publish(uri, run_id, best, "spmi-cifar10", publish.example_images(network), {})
    model, meta = publish.load_published(out.registered_uri, uri)
    assert meta["network"]["channels_last"] and meta["test_acc"] == 0.25
    direct = publish.Classifier.from_best(best)
    x = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8, generator=gen)
    with torch.no_grad():
        assert torch.equal(model(x), direct(x)) and torch.equal(model(x[:1]), direct(x[:1]))


class _dir:
    """``Checkpoint.as_directory()`` stand-in."""

    def __init__(self, path):
        self.path = path

    def __enter__(self):
        return str(self.path)

    def __exit__(self, *exc):
        return False

