"""Datasets: the registry (one spec per dataset in ``datasets/``), on-disk formats, sources
and the SSPLL split."""

from .formats import verify_files
from .registry import DATASETS, DataError, DatasetInfo, get_info, register_dataset
from .sources import ImageData, dataset_folder, default_root, file_md5s, files_checksum, load_dataset, spec_checksum
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
    "dataset_folder",
    "default_root",
    "file_md5s",
    "files_checksum",
    "get_info",
    "load_dataset",
    "make_split",
    "register_dataset",
    "spec_checksum",
    "uniform_partial_labels",
    "verify_files",
]
