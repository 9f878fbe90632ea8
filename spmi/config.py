"""Run configuration: one plain dataclass; method hyperparameters live in ``options``.

The defaults are the authors' commands (lr 0.05, wd 1e-3, SGD 0.9, cosine to 0.01*lr,
256 labelled + 256 unlabelled per step, 500 epochs, seed 123). The settings the paper
sets per dataset (l, p, network, AutoAugment policy, SPMI's T_w and unlabelled EMA) are
held by the dataset's registry entry: ``with_dataset_defaults`` fills what was not given.

Every entry point (``python -m spmi.train``, a search's plan and trials, reproduce) turns
its flat ``{name: value}`` settings into a checked config with ``resolve``; what a field
is (type, limits, role in searches and resumption) is declared on it (``spmi.options``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from spmi.augment import POLICIES
from spmi.data import VAL_LABELS, check_validation_args
from spmi.data.registry import get_info
from spmi.methods import get_method
from spmi.models import list_models
from spmi.options import build, check_fields, option

AUGMENT_CHOICES = (*POLICIES, "none")


@dataclass
class TrainConfig:
    # data
    dataset: str = option("fmnist", "dataset name", search_flag="--dataset")
    data_root: str | None = option(None, "folder holding the dataset files (default: the dataset's Debian "
                                "package folder where installed, else ./data)", resume=True)
    download: bool = option(False, "let torchvision download a missing dataset", resume=True)
    verify_data: bool = option(True, "check the dataset files' MD5 sums", resume=True)
    labelled: int | None = option(None, "number of partially labelled images l (l/c per class) "
                                        "(default: the dataset's: fmnist/cifar10 4000, svhn 1000, cifar100 10000)",
                                  min=1)
    partial_rate: float | None = option(None, "flipping probability p of each wrong label (default: the "
                                              "dataset's: 0.3, cifar100 0.05)", min_exclusive=0.0, max_exclusive=1.0)
    partial_labels: str = option("uniform", "how wrong labels join a candidate set: uniform (each w.p. p) or "
                                            "hierarchical (CIFAR-100: only labels of the true label's superclass, "
                                            "each w.p. p)", choices=("uniform", "hierarchical"))
    val_size: int = option(5000, "images held out of training for validation (0: paper protocol)", min=0)
    val_labels: str = option("true", "labels of the held-out validation images: true (their true labels) or partial "
                                     "(candidate sets drawn like the training data's, rate p)", choices=VAL_LABELS)
    val_from_labelled: int = option(0, "validation images K carved from the l labelled ones with their candidate "
                                       "sets (K/c per class); the method trains on the other l - K. The carved "
                                       "images are the val/* set; held-out ones (--val-size) are then logged as "
                                       "holdout/*, for measurement only", min=0)
    include_labelled: bool = option(True, "the unlabelled set includes the labelled images (authors' protocol)")
    unlabelled_size: int | None = option(None, "use a seeded random subset of this many unlabelled images", min=1)
    # model and method
    model: str | None = option(None, "network (default: the dataset's: lenet, wrn_28_2, wrn_28_8)")
    augment: str | None = option(None, "AutoAugment policy of strong views (default: the dataset's: none on fmnist, "
                                       "cifar10_spmi on CIFAR, svhn)", choices=AUGMENT_CHOICES)
    method: str = option("spmi", "training method", search_flag="--method")
    # the method's Options instance once resolved (a dict of some of them before)
    options: Any = option(help="method hyperparameters", default_factory=dict, search=False)
    # optimisation
    epochs: int = option(500, "training epochs", min=1, search_flag="--max-epochs")
    batch_size: int = option(256, "labelled and unlabelled images per step (each)", min=1)
    lr: float = option(0.05, "initial learning rate", min_exclusive=0.0)
    lr_min_ratio: float = option(0.01, "cosine schedule ends at lr * this", min=0.0, max=1.0)
    momentum: float = option(0.9, "SGD momentum", min=0.0, max_exclusive=1.0)
    weight_decay: float = option(1e-3, "SGD weight decay (paper: 5e-4, authors' code: 1e-3)", min=0.0)
    # execution
    precision: str = option("fp32", "fp32, or bf16 autocast", choices=("fp32", "bf16"))
    channels_last: bool = option(True, "channels_last memory format (4x faster LeNet training on CPU)")
    eval_every: int = option(1, "evaluate validation and test accuracy every N epochs", min=1, search=False,
                             resume=True)
    eval_test: str = option("every", "when test accuracy is measured: every (with each evaluation), best (at each "
                            "new best val/acc and the last epoch; records carry the latest) or end (last epoch)",
                            choices=("every", "best", "end"), resume=True)
    eval_batch_size: int = option(1024, "batch size of evaluation and label-channel passes", min=1, resume=True)
    fold_bn: bool = option(True, "fold BatchNorm into the preceding conv/linear layer for label-channel passes "
                                 "and evaluation (faster inference; same outputs up to float rounding)", resume=True)
    device: str = option("auto", "cpu, cuda, cuda:N or auto", search_flag="--gpus-per-trial", resume=True)
    seed: int = option(123, "seed of the split, partial labels, initialisation and sampling")
    out: str | None = option(None, "run folder: metrics.jsonl, checkpoint.pt", search=False, resume=True)
    checkpoint_every: int = option(1, "write the checkpoint every N epochs (and at the end)", min=1, search=False,
                                   resume=True)
    progress: bool = option(False, "show a per-epoch progress bar", search=False, resume=True)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values; the method options as a dict."""
        return dataclasses.asdict(self)


def option_values(options: Any) -> dict[str, Any]:
    """Method options as a plain dict, from a dict or an Options instance."""
    if dataclasses.is_dataclass(options) and not isinstance(options, type):
        return dataclasses.asdict(options)
    return dict(options)


def is_resolved(cfg: TrainConfig) -> bool:
    """Whether ``cfg`` came from ``resolve`` (its options are the method's Options instance)."""
    return type(cfg.options) is get_method(cfg.method).Options


def resolved(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` itself when ``resolve`` made it, else ``cfg`` resolved (a config built by hand)."""
    return cfg if is_resolved(cfg) else resolve(base=cfg)


def with_dataset_defaults(cfg: TrainConfig) -> TrainConfig:
    """A copy of ``cfg`` in which every dataset setting left unset (None) takes the value
    of the dataset's registry entry, and each of the dataset's method options (T_w,
    unlabelled EMA) that the method has and that was not given takes the dataset's value.
    Idempotent (a resolved config's options are complete already); DataError / ValueError
    for an unknown dataset / method."""
    info = get_info(cfg.dataset)
    out = dataclasses.replace(cfg)
    for name, value in info.paper_config().items():
        if getattr(out, name) is None:
            setattr(out, name, value)
    if not is_resolved(cfg):
        option_names = {f.name for f in dataclasses.fields(get_method(cfg.method).Options)}
        given = option_values(cfg.options)
        out.options = {**{k: v for k, v in info.paper_options().items() if k in option_names}, **given}
    return out


CONFIG_FIELDS = frozenset(f.name for f in dataclasses.fields(TrainConfig))


def config_from_flat(values: dict[str, Any], base: TrainConfig | None = None) -> TrainConfig:
    """Overlay a flat ``{name: value}`` dict on ``base``, unchecked: names of TrainConfig
    fields set those fields, ``options`` (a dict) and any other name are method options (how
    search spaces address both). The options come out as a dict: ``resolve`` types them."""
    cfg = dataclasses.replace(base) if base is not None else TrainConfig()
    options = option_values(cfg.options)
    for key, value in values.items():
        if key == "options":
            options.update(option_values(value))
        elif key in CONFIG_FIELDS:
            setattr(cfg, key, value)
        else:
            options[key] = value
    cfg.options = options
    return cfg


def resolve(flat: dict[str, Any] | None = None, base: TrainConfig | None = None) -> TrainConfig:
    """The one way to a run's config: ``flat`` ({name: value}: TrainConfig fields, method
    options, or ``options``) over ``base`` (default: TrainConfig's defaults), the dataset's
    paper settings for what is unset, the method's typed Options in ``options``, and the
    whole config checked once (``check_config``). The device's presence is the run's to check."""
    cfg = with_dataset_defaults(config_from_flat(flat or {}, base))
    check_config(cfg)
    return cfg


def check_config(cfg: TrainConfig) -> None:
    """Everything checkable without data or devices, in place: each field's type and limits,
    the method's options (built into its Options instance: ``cfg.options``), the model, the
    partial-label scheme, l a multiple of the classes, the validation options. One ValueError/DataError each."""
    check_fields(cfg, skip=("options",))
    info = get_info(cfg.dataset)
    cfg.options = build(get_method(cfg.method).Options, option_values(cfg.options), cfg.method,
                        near=sorted(CONFIG_FIELDS - {"options"}))
    if cfg.model is not None and cfg.model not in list_models():
        raise ValueError(f"unknown model {cfg.model!r}; choose one of: {', '.join(list_models())}")
    superclass_table(cfg)  # hierarchical partial labels need the dataset's superclasses
    if cfg.labelled % info.num_classes:
        raise ValueError(f"--labelled {cfg.labelled} must be a positive multiple of the "
                         f"{info.num_classes} classes of {cfg.dataset}")
    check_validation_args(info.num_classes, cfg.labelled, cfg.val_size, cfg.val_from_labelled, cfg.val_labels)


def superclass_table(cfg: TrainConfig) -> tuple[int, ...] | None:
    """Each class's superclass when the partial labels are hierarchical, else None."""
    if cfg.partial_labels != "hierarchical":
        return None
    table = get_info(cfg.dataset).superclass
    if table is None:
        raise ValueError(f"--partial-labels hierarchical needs a dataset with superclasses (cifar100); "
                         f"{cfg.dataset} has none: use --partial-labels uniform")
    return table
