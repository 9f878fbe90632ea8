"""Publishing a search's best network: the best trial's best-epoch weights as an MLflow
model (uint8 images in, logits out; input example and signature) logged in the trial's
run and registered as ``<method>-<dataset>`` with the alias ``best``."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from spmi.models import create_model
from tuning.record import mlflow_log
from tuning.trial.best import BestEpoch

if TYPE_CHECKING:
    from tuning.results.report import BestTrial

ALIAS, MODEL_NAME = "best", "model"


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
    def from_best(cls, best: BestEpoch) -> Classifier:
        spec = best.network
        net = create_model(spec.model, spec.num_classes, spec.channels)
        net.load_state_dict(best.weights)
        if spec.channels_last:
            net = net.to(memory_format=torch.channels_last)
        return cls(net, list(spec.mean), list(spec.std), spec.channels_last, spec.precision).eval()


@dataclass(frozen=True)
class Published:
    """A published network: its model URI, registered version and alias URI, its epoch."""

    model_uri: str
    version: str
    registered_uri: str
    epoch: int | None = None


def registered_name(method: str, dataset: str) -> str:
    return f"{method}-{dataset}"


def publish(uri: str, run_id: str, best: BestEpoch, name: str, example: np.ndarray,
            tags: dict[str, Any]) -> Published:
    """Log ``best``'s network in run ``run_id`` and register it as ``name`` (alias ``best``
    moved to the new version). ``example``: a few uint8 test images. Returns the model's
    URI, the registered version and ``models:/<name>@best``."""
    import mlflow
    from mlflow.models import infer_signature
    model = Classifier.from_best(best)
    with torch.no_grad():
        out = model(torch.from_numpy(example)).numpy()
    spec = best.network
    metadata = {"dataset": spec.dataset, "data_root": spec.data_root, "verify_data": spec.verify_data,
                "eval_batch_size": spec.eval_batch_size, "best_epoch": best.epoch,
                "val_acc": best.val_acc, "test_acc": None if math.isnan(best.test_acc) else best.test_acc,
                **{k: str(v) for k, v in tags.items()}}
    client = mlflow_log.client(uri)
    status = client.get_run(run_id).info.status
    with mlflow_log.using(uri), mlflow.start_run(run_id=run_id):
        info = mlflow.pytorch.log_model(model, name=MODEL_NAME, input_example=example,
                                        signature=infer_signature(example, out), metadata=metadata,
                                        registered_model_name=name, serialization_format="pickle")
    mlflow_log.terminate(uri, run_id, status)  # the trial run keeps its own end status
    version = str(info.registered_model_version)
    client.set_registered_model_alias(name, ALIAS, version)
    for key, value in {**tags, "best_epoch": best.epoch, "val_acc": best.val_acc, "test_acc": best.test_acc}.items():
        client.set_model_version_tag(name, version, key, str(value))
    return Published(info.model_uri, version, f"models:/{name}@{ALIAS}", best.epoch)


def publish_search_best(plan: Any, best: BestTrial | None) -> Published | None:
    """Publish the report's best trial's kept network (None when there is none)."""
    if best is None:
        return None
    from ray.tune import Checkpoint, ExperimentAnalysis

    from spmi.data import load_dataset
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
    run = mlflow_log.find_trial_run(plan.tracking_uri, plan.experiment_id, best.trial_id)
    if kept.weights is None or run is None:
        return None
    spec = kept.network
    data = load_dataset(spec.dataset, spec.data_root, verify=False)
    tags = {"search": plan.name, "trial_id": best.trial_id, "git_commit": plan.git_commit}
    out = publish(plan.tracking_uri, run.info.run_id, kept, registered_name(plan.method, plan.dataset),
                  data.test_x[:4].numpy(), tags)
    mlflow_log.set_tags(plan.tracking_uri, plan.parent_run_id,
                        {"best_model_uri": out.model_uri, "registered_model": out.registered_uri,
                         "registered_model_version": out.version})
    return out
