"""Locating, obtaining (Debian package, torchvision download), checking and decoding a
dataset, as its registry entry (``DatasetInfo.source``) describes."""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .formats import Arrays, md5_file, verify_files
from .registry import DataError, DatasetInfo, Debian, get_info


@dataclass
class ImageData:
    """Decoded dataset: uint8 [N, C, H, W] images and int64 labels, on the CPU."""

    info: DatasetInfo
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    checksum: str


def default_root(name: str) -> Path:
    """The folder of the dataset's Debian package when installed (Fashion-MNIST), else ``./data``."""
    debian = get_info(name).source.debian
    if debian is not None and debian.folder.is_dir():
        return debian.folder
    return Path("data")


# ---------------------------------------------------------------- finding


def _find(info: DatasetInfo, root: Path) -> Path | None:
    """The first of the source's folders under ``root`` that holds all its files."""
    fmt = info.source.format
    for sub in info.source.folders:
        folder = root / sub
        if all(fmt.locate(folder, n) is not None for n in fmt.files()):
            return folder
    return None


def _missing(info: DatasetInfo, root: Path) -> str:
    """Why ``info`` is not in ``root`` and how to fix it (one line)."""
    if info.source.missing is not None:
        return info.source.missing(root)
    sub = info.source.folders[0]
    folder = root / sub
    absent = ", ".join(n for n in info.source.format.files() if info.source.format.locate(folder, n) is None)
    where = f"{sub}/ inside it" if sub else "those files"
    return (
        f"{info.title} not found: {folder} lacks {absent}; run `python -m spmi.data.fetch {info.name}` or pass "
        f"--download to fetch it, or --data-root DIR with {where}"
    )


def torchvision_fetch(cls_name: str, root: Path, **kwargs: Any) -> None:
    """Download into ``root`` through ``torchvision.datasets.<cls_name>(root, download=True, **kwargs)``."""
    import torchvision.datasets as tvd

    getattr(tvd, cls_name)(str(root), download=True, **kwargs)


def torchvision(cls_name: str, **kwargs: Any) -> Callable[[Path], None]:
    """A source's ``fetch``: one torchvision download call (see ``torchvision_fetch``)."""
    return functools.partial(torchvision_fetch, cls_name, **kwargs)


# ---------------------------------------------------------------- obtaining


def _may_apt() -> bool:
    """True when running as root with apt-get."""
    euid = getattr(os, "geteuid", lambda: -1)()
    return euid == 0 and shutil.which("apt-get") is not None


def _apt_install(title: str, debian: Debian) -> bool:
    """Install the dataset's Debian package; True on success."""
    cmd = ["apt-get", "install", "-y", debian.package]
    print(f"spmi: {title} not found; running `{' '.join(cmd)}`", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"spmi: apt-get failed ({done.returncode}): {tail}", flush=True)
    return done.returncode == 0 and debian.folder.is_dir()


def _download(info: DatasetInfo, root: Path) -> None:
    print(f"spmi: downloading {info.title} into {root}", flush=True)
    try:
        root.mkdir(parents=True, exist_ok=True)
        info.source.fetch(root)
    except Exception as err:  # network and archive errors come in many types
        raise DataError(
            f"download of {info.title} into {root} failed ({err}); check the network, "
            f"or place the files there yourself and pass --data-root {root}"
        ) from None


def _locate(info: DatasetInfo, root: Path, given: bool, download: bool, install: bool = False) -> Path:
    """Folder holding the dataset's files, downloading them when allowed; ``install`` (only
    ``spmi.data.fetch``, never a training run) may install the dataset's Debian package."""
    folder = _find(info, root)
    debian = info.source.debian
    if (folder is None and install and debian is not None and not given and not debian.folder.exists()
            and _may_apt() and _apt_install(info.title, debian)):
        root = debian.folder
        folder = _find(info, root)
    if folder is None and download:
        _download(info, root)
        folder = _find(info, root)
    if folder is None:
        raise DataError(_missing(info, root))
    return folder


def dataset_folder(name: str, root: str | Path | None = None) -> Path:
    """The folder under ``root`` (default: the dataset's default folder) that holds dataset
    ``name``'s files; DataError saying how to obtain them otherwise. Nothing is fetched."""
    info = get_info(name)
    given = root is not None
    return _locate(info, Path(root).expanduser() if given else default_root(name), given, download=False)


# ---------------------------------------------------------------- files checksum


def files_checksum(table: dict[str, str]) -> str:
    """16 hex digits of SHA-256 over the sorted ``name md5`` lines of ``table`` (file ->
    MD5): one value for a dataset's files, equal for two copies when every file's MD5 is."""
    lines = "".join(f"{name} {md5.lower()}\n" for name, md5 in sorted(table.items()))
    return hashlib.sha256(lines.encode()).hexdigest()[:16]


def spec_checksum(name: str) -> str:
    """The files checksum of dataset ``name``'s spec (its MD5 table): what files that pass
    the MD5 check give; no file is read."""
    return files_checksum(get_info(name).source.md5)


def file_md5s(name: str, root: str | Path | None = None, verify: bool = True) -> dict[str, str]:
    """MD5 of each file of dataset ``name`` under ``root`` (of the decompressed bytes of a
    ``.gz``): the spec's table when ``verify``, which checks them against it (DataError
    naming the first file that differs). Nothing is fetched or decoded."""
    info = get_info(name)
    folder = dataset_folder(name, root)
    if verify:
        return verify_files(folder, info.source.md5)
    paths = {n: info.source.format.locate(folder, n) for n in info.source.format.files()}  # all there (found)
    return {n: md5_file(path) for n, path in paths.items() if path is not None}


# ---------------------------------------------------------------- assembling


def _digest(arrays: Arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a).data)
    return h.hexdigest()[:16]


def _check_arrays(info: DatasetInfo, arrays: Arrays) -> None:
    shape = (info.channels, info.size, info.size)
    for x, y in (arrays[:2], arrays[2:]):
        if x.shape[1:] != shape:
            raise DataError(f"{info.name}: images have shape {x.shape[1:]}, expected {shape}; re-download the dataset")
        if len(y) and (y.min() < 0 or y.max() >= info.num_classes):
            raise DataError(
                f"{info.name}: labels outside 0..{info.num_classes - 1}; these files are not {info.name}, re-download"
            )


def _tensor(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).to(dtype).contiguous()


def load_dataset(
    name: str,
    root: str | Path | None = None,
    download: bool = False,
    verify: bool = True,
    checksums: dict[str, str] | None = None,
    install: bool = False,
) -> ImageData:
    """Find (or obtain), optionally MD5-check, and decode dataset ``name``.

    ``checksums`` (file name -> md5, relative to the dataset folder) replaces the
    built-in table; ``verify=False`` skips the check. ``install`` lets ``spmi.data.fetch``
    install Debian's Fashion-MNIST package as root; training runs never change the system.
    """
    info = get_info(name)
    given = root is not None
    base = Path(root).expanduser() if given else default_root(name)
    folder = _locate(info, base, given, download, install)
    if verify:
        verify_files(folder, checksums if checksums is not None else info.source.md5)
    arrays = info.source.format.parse(folder)
    _check_arrays(info, arrays)
    x, y, tx, ty = arrays
    return ImageData(
        info,
        _tensor(x, torch.uint8),
        _tensor(y, torch.int64),
        _tensor(tx, torch.uint8),
        _tensor(ty, torch.int64),
        _digest(arrays),
    )
