"""Metadata of the supported image datasets."""

from __future__ import annotations

from dataclasses import dataclass


class DataError(Exception):
    """A dataset is missing, corrupt or misnamed; the message says how to fix it."""


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about one dataset (shape, normalisation, defaults)."""

    name: str
    num_classes: int
    channels: int
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    policy: str | None
    model: str


DATASETS: dict[str, DatasetInfo] = {
    "fmnist": DatasetInfo("fmnist", 10, 1, 28, (0.1307,), (0.3081,), None, "lenet"),
    "cifar10": DatasetInfo(
        "cifar10", 10, 3, 32, (0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261), "cifar10_spmi", "wrn_28_2"
    ),
    "svhn": DatasetInfo("svhn", 10, 3, 32, (0.4380, 0.4440, 0.4730), (0.1751, 0.1771, 0.1744), "svhn", "wrn_28_2"),
    "cifar100": DatasetInfo(
        "cifar100", 100, 3, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), "cifar10_spmi", "wrn_28_8"
    ),
}


def get_info(name: str) -> DatasetInfo:
    """Return the metadata of ``name`` or raise DataError listing the valid names."""
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        choices = ", ".join(sorted(DATASETS))
        raise DataError(f"unknown dataset {name!r}; choose one of: {choices}") from None
