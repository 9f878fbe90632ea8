"""Datasets: the registry (one spec per dataset in ``datasets/``), on-disk formats, sources
and the SSPLL split."""

from .formats import verify_files
from .registry import DATASETS, DataError, DatasetInfo, get_info, register_dataset
from .sources import ImageData, default_root, load_dataset
from .split import VAL_LABELS, SSPLLSplit, check_split_args, check_validation_args, make_split, uniform_partial_labels

__all__ = [
    "DATASETS",
    "DataError",
    "DatasetInfo",
    "ImageData",
    "SSPLLSplit",
    "VAL_LABELS",
    "check_split_args",
    "check_validation_args",
    "default_root",
    "get_info",
    "load_dataset",
    "make_split",
    "register_dataset",
    "uniform_partial_labels",
    "verify_files",
]
