"""Metadata of the supported image datasets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class DataError(Exception):
    """A dataset is missing, corrupt or misnamed; the message says how to fix it."""


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about one dataset (shape, normalisation) and the SPMI paper's settings
    for it (the authors' README commands): l, p, network, AutoAugment policy (None: no
    AutoAugment), SPMI's warm-up T_w and unlabelled EMA theta."""

    name: str
    num_classes: int
    channels: int
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    policy: str | None
    model: str
    labelled: int
    partial_rate: float
    warmup: int
    unlabelled_ema: float
    superclass: tuple[int, ...] | None = None  # each class's superclass (CIFAR-100's 20 coarse labels)

    def paper_config(self) -> dict[str, Any]:
        """The paper's values of TrainConfig fields."""
        return {"labelled": self.labelled, "partial_rate": self.partial_rate, "model": self.model,
                "augment": self.policy or "none"}

    def paper_options(self) -> dict[str, Any]:
        """The paper's values of method options (applied to methods that have them)."""
        return {"warmup": self.warmup, "unlabelled_ema": self.unlabelled_ema}


# CIFAR-100's coarse label (superclass) of each fine label, in the dataset's fine-label order
# (the coarse_labels of its files; the authors' hierarchical table in utils_algo.py)
CIFAR100_SUPERCLASS = (
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11, 6, 11, 5, 10, 7, 6, 13, 15, 3, 15,
    0, 11, 1, 10, 12, 14, 16, 9, 11, 5, 5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13, 16, 19, 2, 4, 6, 19, 5, 5, 8, 19,
    18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
)

DATASETS: dict[str, DatasetInfo] = {
    "fmnist": DatasetInfo("fmnist", 10, 1, 28, (0.1307,), (0.3081,), None, "lenet", 4000, 0.3, 10, 0.0),
    "cifar10": DatasetInfo(
        "cifar10", 10, 3, 32, (0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261), "cifar10_spmi", "wrn_28_2",
        4000, 0.3, 10, 0.0),
    "svhn": DatasetInfo("svhn", 10, 3, 32, (0.4380, 0.4440, 0.4730), (0.1751, 0.1771, 0.1744), "svhn", "wrn_28_2",
                        1000, 0.3, 10, 0.0),
    "cifar100": DatasetInfo(
        "cifar100", 100, 3, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), "cifar10_spmi", "wrn_28_8",
        10000, 0.05, 20, 0.9, CIFAR100_SUPERCLASS),
}


def get_info(name: str) -> DatasetInfo:
    """Return the metadata of ``name`` or raise DataError listing the valid names."""
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        choices = ", ".join(sorted(DATASETS))
        raise DataError(f"unknown dataset {name!r}; choose one of: {choices}") from None
