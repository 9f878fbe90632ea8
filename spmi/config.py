"""Run configuration: one plain dataclass; method hyperparameters live in ``options``.

The defaults are the authors' commands (lr 0.05, wd 1e-3, SGD 0.9, cosine to 0.01*lr,
256 labelled + 256 unlabelled per step, 500 epochs, seed 123). The settings the paper
sets per dataset (l, p, network, AutoAugment policy, SPMI's T_w and unlabelled EMA) are
held by the dataset's registry entry: ``with_dataset_defaults`` fills what was not given.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from spmi.augment import POLICIES
from spmi.data.registry import get_info
from spmi.methods import get_method
from spmi.options import option, validate

AUGMENT_CHOICES = (*POLICIES, "none")


@dataclass
class TrainConfig:
    # data
    dataset: str = option("fmnist", "dataset name")
    data_root: str | None = option(None, "folder holding the dataset files (default: per dataset)")
    download: bool = option(False, "let torchvision download a missing dataset")
    verify_data: bool = option(True, "check the dataset files' MD5 sums")
    labelled: int | None = option(None, "number of partially labelled images l (l/c per class) "
                                        "(default: the dataset's: fmnist/cifar10 4000, svhn 1000, cifar100 10000)",
                                  min=1)
    partial_rate: float | None = option(None, "flipping probability p of each wrong label (default: the "
                                              "dataset's: 0.3, cifar100 0.05)", min_exclusive=0.0, max_exclusive=1.0)
    partial_labels: str = option("uniform", "how wrong labels join a candidate set: uniform (each w.p. p) or "
                                            "hierarchical (CIFAR-100: only labels of the true label's superclass, "
                                            "each w.p. p)", choices=("uniform", "hierarchical"))
    val_size: int = option(5000, "images held out of training for validation (0: paper protocol)", min=0)
    include_labelled: bool = option(True, "the unlabelled set includes the labelled images (authors' protocol)")
    unlabelled_size: int | None = option(None, "use a seeded random subset of this many unlabelled images", min=1)
    # model and method
    model: str | None = option(None, "network (default: the dataset's: lenet, wrn_28_2, wrn_28_8)")
    augment: str | None = option(None, "AutoAugment policy of strong views (default: the dataset's: none on fmnist, "
                                       "cifar10_spmi on CIFAR, svhn)", choices=AUGMENT_CHOICES)
    method: str = option("spmi", "training method")
    options: dict[str, Any] = field(default_factory=dict, metadata={"help": "method hyperparameters"})
    # optimisation
    epochs: int = option(500, "training epochs", min=1)
    batch_size: int = option(256, "labelled and unlabelled images per step (each)", min=1)
    lr: float = option(0.05, "initial learning rate", min_exclusive=0.0)
    lr_min_ratio: float = option(0.01, "cosine schedule ends at lr * this", min=0.0, max=1.0)
    momentum: float = option(0.9, "SGD momentum", min=0.0, max_exclusive=1.0)
    weight_decay: float = option(1e-3, "SGD weight decay (paper: 5e-4, authors' code: 1e-3)", min=0.0)
    # execution
    precision: str = option("fp32", "fp32, or bf16 autocast", choices=("fp32", "bf16"))
    channels_last: bool = option(True, "channels_last memory format (4x faster LeNet training on CPU)")
    eval_every: int = option(1, "evaluate validation and test accuracy every N epochs", min=1)
    eval_test: str = option("every", "when test accuracy is measured: every (with each evaluation), best (at each "
                            "new best val/acc and the last epoch; records carry the latest) or end (last epoch)",
                            choices=("every", "best", "end"))
    eval_batch_size: int = option(1024, "batch size of evaluation and label-channel passes", min=1)
    fold_bn: bool = option(True, "fold BatchNorm into the preceding conv/linear layer for label-channel passes "
                                 "and evaluation (faster inference; same outputs up to float rounding)")
    device: str = option("auto", "cpu, cuda, cuda:N or auto")
    seed: int = option(123, "seed of the split, partial labels, initialisation and sampling")
    out: str | None = option(None, "run folder: metrics.jsonl, checkpoint.pt")
    checkpoint_every: int = option(1, "write the checkpoint every N epochs (and at the end)", min=1)
    progress: bool = option(False, "show a per-epoch progress bar")

    def validate(self) -> None:
        validate(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def with_dataset_defaults(cfg: TrainConfig) -> TrainConfig:
    """A copy of ``cfg`` in which every dataset setting left unset (None) takes the value
    of the dataset's registry entry, and each of the dataset's method options (T_w,
    unlabelled EMA) that the method has and that was not given takes the dataset's value.
    Idempotent; DataError / ValueError for an unknown dataset / method."""
    info = get_info(cfg.dataset)
    option_names = {f.name for f in dataclasses.fields(get_method(cfg.method).Options)}
    out = dataclasses.replace(cfg, options=dict(cfg.options))
    for name, value in info.paper_config().items():
        if getattr(out, name) is None:
            setattr(out, name, value)
    out.options = {**{k: v for k, v in info.paper_options().items() if k in option_names}, **cfg.options}
    return out


CONFIG_FIELDS = frozenset(f.name for f in dataclasses.fields(TrainConfig))


def config_from_flat(values: dict[str, Any], base: TrainConfig | None = None) -> TrainConfig:
    """Overlay a flat ``{name: value}`` dict on ``base``: names of TrainConfig fields set
    those fields, any other name is a method option (how search spaces address both)."""
    cfg = dataclasses.replace(base) if base is not None else TrainConfig()
    options = dict(cfg.options)
    for key, value in values.items():
        if key == "options":
            options.update(value)
        elif key in CONFIG_FIELDS:
            setattr(cfg, key, value)
        else:
            options[key] = value
    cfg.options = options
    return cfg
