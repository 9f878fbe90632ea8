"""Publishing a search's best network: the best trial's best-epoch weights as an MLflow
model (uint8 images in, logits out; input example and signature) logged in the trial's
run and registered as ``<method>-<dataset>`` with the alias ``best``.

The model is saved in MLflow's ``pt2`` format (``torch.export``): a graph as JSON and the
weights as raw tensor bytes, no pickle. ``load_published`` reads it back without unpickling
(MLflow checks the archive first) and rebuilds the network from ``spmi.models`` with
those weights, so it runs on any device exactly as the trainer evaluated it."""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from spmi.models import create_model
from tuning.record import mlflow_log
from tuning.trial.best import BestEpoch, NetworkSpec

if TYPE_CHECKING:
    from tuning.results.report import BestTrial

ALIAS, MODEL_NAME = "best", "model"
NETWORK_KEYS = ("model", "num_classes", "channels", "size", "mean", "std", "channels_last", "precision")
PICKLE_ENV = "MLFLOW_ALLOW_PICKLE_DESERIALIZATION"
EXAMPLE_IMAGES = 2  # > 1: the exported graph keeps the batch dimension dynamic


class Classifier(nn.Module):
    """The network with its input preparation: uint8 images [N, C, H, W] -> logits,
    normalised exactly as the trainer's evaluation does (``Augmenter.plain``)."""

    def __init__(self, net: nn.Module, mean: list[float], std: list[float], channels_last: bool,
                 precision: str = "fp32"):
        super().__init__()
        self.net, self.channels_last, self.precision = net, channels_last, precision
        c = len(mean)
        mean_t, std_t = torch.tensor(mean).view(1, c, 1, 1), torch.tensor(std).view(1, c, 1, 1)
        self.register_buffer("inv_std", 1.0 / std_t)
        self.register_buffer("shift", -mean_t / std_t)

    def forward(self, x: Tensor) -> Tensor:
        scale = 1.0 / 255.0 if x.dtype == torch.uint8 else 1.0
        y = x.float().mul_(self.inv_std * scale).add_(self.shift)
        if self.channels_last:
            y = y.contiguous(memory_format=torch.channels_last)
        autocast = (torch.autocast(y.device.type, dtype=torch.bfloat16) if self.precision == "bf16"
                    else contextlib.nullcontext())
        with autocast:
            return self.net(y).float()

    @classmethod
    def build(cls, network: Mapping[str, Any]) -> Classifier:
        """An untrained classifier of ``network`` (the ``NETWORK_KEYS`` of a network spec)."""
        net = create_model(network["model"], int(network["num_classes"]), int(network["channels"]))
        if network["channels_last"]:
            net = net.to(memory_format=torch.channels_last)
        return cls(net, list(network["mean"]), list(network["std"]), bool(network["channels_last"]),
                   network.get("precision", "fp32"))

    @classmethod
    def from_best(cls, best: BestEpoch) -> Classifier:
        assert best.network is not None and best.weights is not None
        model = cls.build(network_of(best.network))
        model.net.load_state_dict(best.weights)
        return model.eval()


@dataclass(frozen=True)
class Published:
    """A published network: its model URI, registered version and alias URI, its epoch."""

    model_uri: str
    version: str
    registered_uri: str
    epoch: int | None = None


def network_of(spec: NetworkSpec) -> dict[str, Any]:
    """What rebuilding the classifier needs, of a trial's network spec (``tuning.trial.best``),
    as plain values (the model's metadata)."""
    values = spec.to_dict()
    return {k: values[k] for k in NETWORK_KEYS}


def example_images(network: Mapping[str, Any], n: int = EXAMPLE_IMAGES) -> np.ndarray:
    """``n`` black uint8 images of the network's input shape: the model's input example,
    made from the spec (the driver needs no dataset)."""
    size = int(network["size"])
    return np.zeros((n, int(network["channels"]), size, size), dtype=np.uint8)


def registered_name(method: str, dataset: str) -> str:
    return f"{method}-{dataset}"


def pip_requirements() -> list[str]:
    """What loading the model needs: torch (MLflow adds itself); no cloudpickle, and no
    inference of them by loading the model in a subprocess."""
    import mlflow.pytorch
    return [r for r in mlflow.pytorch.get_default_pip_requirements() if not r.startswith("cloudpickle")]


def publish(uri: str, run_id: str, best: BestEpoch, name: str, example: np.ndarray,
            tags: dict[str, Any]) -> Published:
    """Log ``best``'s network in run ``run_id`` and register it as ``name`` (alias ``best``
    moved to the new version). ``example``: a few uint8 images (at least 2). Returns the
    model's URI, the registered version and ``models:/<name>@best``."""
    import mlflow
    from mlflow.models import infer_signature
    if len(example) < EXAMPLE_IMAGES:
        raise ValueError(f"publish: give at least {EXAMPLE_IMAGES} example images (torch.export fixes a batch of "
                         f"{len(example)} in the graph)")
    model = Classifier.from_best(best)
    with torch.no_grad():
        out = model(torch.from_numpy(example)).numpy()
    spec = best.network
    metadata = {"dataset": spec.dataset, "data_root": spec.data_root, "verify_data": spec.verify_data,
                "eval_batch_size": spec.eval_batch_size, "best_epoch": best.epoch, "network": network_of(spec),
                "metric": best.metric, "score": best.score, "val_acc": _number(best.val_acc),
                "test_acc": _number(best.test_acc),
                **{k: str(v) for k, v in tags.items()}}
    client = mlflow_log.client(uri)
    status = client.get_run(run_id).info.status
    with mlflow_log.using(uri), mlflow.start_run(run_id=run_id), warnings.catch_warnings():
        # channels_last weights: torch.export.save notes they are strided views (of themselves)
        warnings.filterwarnings("ignore", message="No complete tensor found in the group")
        info = mlflow.pytorch.log_model(model, name=MODEL_NAME, input_example=example,
                                        signature=infer_signature(example, out), metadata=metadata,
                                        registered_model_name=name, serialization_format="pt2",
                                        pip_requirements=pip_requirements())
    mlflow_log.terminate(uri, run_id, status)  # the trial run keeps its own end status
    version = str(info.registered_model_version)
    client.set_registered_model_alias(name, ALIAS, version)
    for key, value in {**tags, "best_epoch": best.epoch, "metric": best.metric, "score": best.score,
                       "val_acc": best.val_acc, "test_acc": best.test_acc}.items():
        client.set_model_version_tag(name, version, key, str(value))
    return Published(info.model_uri, version, f"models:/{name}@{ALIAS}", best.epoch)


@contextlib.contextmanager
def pickle_refused() -> Iterator[None]:
    """Inside, MLflow's PyTorch loader refuses a pickled model and checks that a ``pt2``
    archive holds only JSON, text, raw tensor bytes and ``weights_only`` torch records."""
    before = os.environ.get(PICKLE_ENV)
    os.environ[PICKLE_ENV] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(PICKLE_ENV, None)
        else:
            os.environ[PICKLE_ENV] = before


def load_published(model_uri: str, tracking_uri: str, device: str = "cpu") -> tuple[Classifier, dict[str, Any]]:
    """The network of a model published by ``publish`` (on ``device``, in eval mode) and the
    model's metadata, read without unpickling anything. A model logged as a pickle (before
    the ``pt2`` format) is refused: loading it would run whatever code the pickle holds."""
    import mlflow
    with mlflow_log.using(tracking_uri), pickle_refused():
        meta = mlflow.models.get_model_info(model_uri).metadata or {}
        if "dataset" not in meta:
            raise ValueError(f"{model_uri} is not a model published by tuning/search.py (no dataset in its metadata)")
        if "network" not in meta:
            raise ValueError(f"{model_uri} is a pickled model (published before the pt2 format) and is refused: "
                             f"loading it would run any code the pickle holds; publish the search's best again "
                             f"(resume its search: tuning/search.py --resume --name {meta.get('search', 'NAME')})")
        exported = mlflow.pytorch.load_model(model_uri)
    model = Classifier.build(meta["network"])
    model.load_state_dict(exported.state_dict())
    model.eval()
    probe = torch.randint(0, 256, example_images(meta["network"]).shape, dtype=torch.uint8,
                          generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        if not torch.allclose(model(probe), exported(probe), rtol=1e-3, atol=1e-3):
            raise ValueError(f"{model_uri}: spmi.models' {meta['network']['model']} no longer computes what the "
                             f"published graph does; evaluate it with the code of its git_commit tag")
    return model.to(device), meta


def _number(v: float) -> float | None:
    return None if v is None or math.isnan(v) else float(v)


def final_network(folder: Path, kept: BestEpoch, best: BestTrial) -> BestEpoch:
    """The network of a trial's final checkpoint (in ``folder``), described as ``kept``'s
    (same architecture and input preparation), with the report's numbers of that epoch."""
    from spmi.checkpoint import load
    from tuning.trial.backend import CHECKPOINT_FILE
    state = load(folder / CHECKPOINT_FILE)
    final = BestEpoch(kept.metric)
    final.epoch, final.score = int(state["epoch"]), best.score
    final.val_acc = math.nan if best.val_acc is None else best.val_acc
    final.test_acc = math.nan if best.test_acc is None else best.test_acc
    final.weights, final.network = state["model"], kept.network
    return final


def publish_search_best(plan: Any, best: BestTrial | None) -> Published | None:
    """Publish the network of the report's selected trial at its selected epoch (None when
    there is none): the best epoch's kept weights, or with the epoch rule ``last`` the
    final checkpoint's."""
    if best is None:
        return None
    from ray.tune import Checkpoint, ExperimentAnalysis
    path, fs = plan.storage.ray_location(plan.name)
    trials = ExperimentAnalysis(path, storage_filesystem=fs).trials
    trial = next(t for t in trials if t.trial_id == best.trial_id)
    checkpoint = trial.checkpoint
    if checkpoint is None and (trial.last_result or {}).get("checkpoint_path"):  # a DDP trial's Train checkpoint
        checkpoint = Checkpoint(trial.last_result["checkpoint_path"], filesystem=fs)
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        kept = BestEpoch.load(folder)
        if best.epoch_rule == "last" and kept.weights is not None:
            kept = final_network(Path(folder), kept, best)
    run = mlflow_log.find_trial_run(plan.tracking_uri, plan.experiment_id, best.trial_id)
    if kept.weights is None or run is None:
        return None
    tags = {"search": plan.name, "trial_id": best.trial_id, "git_commit": plan.git_commit}
    out = publish(plan.tracking_uri, run.info.run_id, kept, registered_name(plan.method, plan.dataset),
                  example_images(network_of(kept.network)), tags)
    mlflow_log.set_tags(plan.tracking_uri, plan.parent_run_id,
                        {"best_model_uri": out.model_uri, "registered_model": out.registered_uri,
                         "registered_model_version": out.version})
    return out
