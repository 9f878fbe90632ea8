"""The dataset registry: one spec per dataset (``spmi/data/datasets/<name>.py``) holding its
facts, its files and how to obtain them, and the SPMI paper's settings for it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spmi.registry import Registry

from .errors import DataError

if TYPE_CHECKING:
    from .formats import Format


@dataclass(frozen=True)
class Debian:
    """A Debian package holding the dataset's files in ``folder`` once installed."""

    package: str
    folder: Path


@dataclass(frozen=True, kw_only=True)
class Source:
    """Where a dataset's files lie, how they are checked and decoded, and how to obtain them."""

    format: Format  # the file names and their decoder (spmi.data.formats)
    md5: dict[str, str]  # file -> MD5 of its (decompressed) bytes, checked in this order
    fetch: Callable[[Path], None]  # downloads the files into a data root (torchvision)
    folders: tuple[str, ...] = ("",)  # where under a data root the files are looked for, in order
    debian: Debian | None = None  # `python -m spmi.data.fetch` may install it (as root)
    missing: Callable[[Path], str] | None = None  # the not-found message, where the generic one does not fit


@dataclass(frozen=True, kw_only=True)
class DatasetInfo:
    """Everything about one dataset: static facts (shape, classes, normalisation, sizes), its
    source, and the SPMI paper's settings for it (the authors' README commands): l, p,
    network, AutoAugment policy (None: no AutoAugment), SPMI's warm-up T_w and unlabelled
    EMA theta."""

    name: str
    title: str  # as written in messages
    num_classes: int
    channels: int
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train_size: int  # images in the real training and test sets
    test_size: int
    source: Source
    model: str
    policy: str | None
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


DATASETS: Registry[DatasetInfo] = Registry("dataset", "spmi.data.datasets", error=DataError)


def register_dataset(info: DatasetInfo) -> DatasetInfo:
    """Register ``info`` under its name (a dataset module calls this once)."""
    return DATASETS.add(info.name, info)


def get_info(name: str) -> DatasetInfo:
    """Return the spec of ``name`` or raise DataError listing the valid names."""
    return DATASETS.get(name)
