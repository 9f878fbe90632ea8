"""Locating, obtaining (Debian package, torchvision download) and decoding each dataset."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .formats import read_cifar_batch, read_cifar_batches, read_idx_pair, read_svhn_mat, resolve, verify_files
from .registry import DataError, DatasetInfo, get_info

DEBIAN_FMNIST = Path("/usr/share/datasets/fashion-mnist")
FMNIST_APT = ["apt-get", "install", "-y", "dataset-fashion-mnist"]
# MD5 of the decompressed idx files (identical to upstream; Debian recompresses the .gz).
FMNIST_MD5 = {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}
CIFAR10_DIR, CIFAR100_DIR = "cifar-10-batches-py", "cifar-100-python"
CIFAR10_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
CIFAR100_FILES = ["train", "test"]
SVHN_FILES = ["train_32x32.mat", "test_32x32.mat"]

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@dataclass
class ImageData:
    """Decoded dataset: uint8 [N, C, H, W] images and int64 labels, on the CPU."""

    info: DatasetInfo
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    checksum: str


@dataclass(frozen=True)
class _Source:
    """How to find, fetch, check and parse one dataset."""

    title: str
    find: Callable[[Path], Path | None]
    fetch: Callable[[Path], None]
    table: Callable[[], dict[str, str]]
    parse: Callable[[Path], Arrays]
    missing: Callable[[Path], str]


def default_root(name: str) -> Path:
    """Debian's Fashion-MNIST folder when installed, else ``./data``."""
    get_info(name)
    if name == "fmnist" and DEBIAN_FMNIST.is_dir():
        return DEBIAN_FMNIST
    return Path("data")


# ---------------------------------------------------------------- finding


def _complete(folder: Path, names: list[str]) -> bool:
    return all(resolve(folder, n) is not None for n in names)


def _find_fmnist(root: Path) -> Path | None:
    for folder in (root, root / "FashionMNIST" / "raw"):
        if _complete(folder, list(FMNIST_MD5)):
            return folder
    return None


def _find_in(sub: str, names: list[str]) -> Callable[[Path], Path | None]:
    def find(root: Path) -> Path | None:
        folder = root / sub
        return folder if all((folder / n).is_file() for n in names) else None

    return find


def _missing_fmnist(root: Path) -> str:
    return (
        f"Fashion-MNIST not found in {root} (nor in {root / 'FashionMNIST' / 'raw'}): "
        "run `make data` or `python -m spmi.data.fetch fmnist` (as root it runs "
        "`apt-get install dataset-fashion-mnist`), or pass --data-root DIR holding the "
        "{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] files, or pass --download"
    )


def _missing_in(name: str, title: str, sub: str, names: list[str]) -> Callable[[Path], str]:
    def missing(root: Path) -> str:
        folder = root / sub
        absent = ", ".join(n for n in names if not (folder / n).is_file())
        where = f"{sub}/ inside it" if sub else "those files"
        return (
            f"{title} not found: {folder} lacks {absent}; run `python -m spmi.data.fetch {name}` or pass "
            f"--download to fetch it, or --data-root DIR with {where}"
        )

    return missing


# ---------------------------------------------------------------- fetching and tables


def _fetch_fmnist(root: Path) -> None:
    from torchvision.datasets import FashionMNIST

    FashionMNIST(str(root), train=True, download=True)


def _fetch_cifar10(root: Path) -> None:
    from torchvision.datasets import CIFAR10

    CIFAR10(str(root), train=True, download=True)


def _fetch_cifar100(root: Path) -> None:
    from torchvision.datasets import CIFAR100

    CIFAR100(str(root), train=True, download=True)


def _fetch_svhn(root: Path) -> None:
    from torchvision.datasets import SVHN

    for split, name in zip(("train", "test"), SVHN_FILES, strict=True):
        if not (root / name).is_file():
            SVHN(str(root), split=split, download=True)


def _table_cifar(cls_name: str) -> Callable[[], dict[str, str]]:
    def table() -> dict[str, str]:
        import torchvision.datasets as tvd

        cls = getattr(tvd, cls_name)
        return {name: md5 for name, md5 in cls.train_list + cls.test_list}

    return table


def _table_svhn() -> dict[str, str]:
    from torchvision.datasets import SVHN

    return {SVHN.split_list[s][1]: SVHN.split_list[s][2] for s in ("train", "test")}


# ---------------------------------------------------------------- parsing


def _parse_fmnist(folder: Path) -> Arrays:
    def pair(prefix: str) -> tuple[np.ndarray, np.ndarray]:
        images = resolve(folder, f"{prefix}-images-idx3-ubyte")
        labels = resolve(folder, f"{prefix}-labels-idx1-ubyte")
        assert images is not None and labels is not None
        return read_idx_pair(images, labels)

    return *pair("train"), *pair("t10k")


def _parse_cifar10(folder: Path) -> Arrays:
    train = read_cifar_batches([folder / n for n in CIFAR10_FILES[:5]])
    return *train, *read_cifar_batch(folder / "test_batch")


def _parse_cifar100(folder: Path) -> Arrays:
    train = read_cifar_batch(folder / "train", "fine_labels")
    return *train, *read_cifar_batch(folder / "test", "fine_labels")


def _parse_svhn(folder: Path) -> Arrays:
    return *read_svhn_mat(folder / SVHN_FILES[0]), *read_svhn_mat(folder / SVHN_FILES[1])


_SOURCES: dict[str, _Source] = {
    "fmnist": _Source(
        "Fashion-MNIST", _find_fmnist, _fetch_fmnist, lambda: dict(FMNIST_MD5), _parse_fmnist, _missing_fmnist
    ),
    "cifar10": _Source(
        "CIFAR-10",
        _find_in(CIFAR10_DIR, CIFAR10_FILES),
        _fetch_cifar10,
        _table_cifar("CIFAR10"),
        _parse_cifar10,
        _missing_in("cifar10", "CIFAR-10", CIFAR10_DIR, CIFAR10_FILES),
    ),
    "cifar100": _Source(
        "CIFAR-100",
        _find_in(CIFAR100_DIR, CIFAR100_FILES),
        _fetch_cifar100,
        _table_cifar("CIFAR100"),
        _parse_cifar100,
        _missing_in("cifar100", "CIFAR-100", CIFAR100_DIR, CIFAR100_FILES),
    ),
    "svhn": _Source(
        "SVHN",
        _find_in("", SVHN_FILES),
        _fetch_svhn,
        _table_svhn,
        _parse_svhn,
        _missing_in("svhn", "SVHN", "", SVHN_FILES),
    ),
}


# ---------------------------------------------------------------- obtaining


def _may_apt() -> bool:
    """True when running as root without Debian's Fashion-MNIST but with apt-get."""
    euid = getattr(os, "geteuid", lambda: -1)()
    return euid == 0 and not DEBIAN_FMNIST.exists() and shutil.which("apt-get") is not None


def _apt_install_fmnist() -> bool:
    """Install Debian's dataset-fashion-mnist package; True on success."""
    print(f"spmi: Fashion-MNIST not found; running `{' '.join(FMNIST_APT)}`", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    done = subprocess.run(FMNIST_APT, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"spmi: apt-get failed ({done.returncode}): {tail}", flush=True)
    return done.returncode == 0 and DEBIAN_FMNIST.is_dir()


def _download(src: _Source, root: Path) -> None:
    print(f"spmi: downloading {src.title} into {root}", flush=True)
    try:
        root.mkdir(parents=True, exist_ok=True)
        src.fetch(root)
    except Exception as err:  # network and archive errors come in many types
        raise DataError(
            f"download of {src.title} into {root} failed ({err}); check the network, "
            f"or place the files there yourself and pass --data-root {root}"
        ) from None


def _locate(name: str, root: Path, given: bool, download: bool, install: bool = False) -> Path:
    """Folder holding the dataset's files, downloading them when allowed; ``install`` (only
    ``spmi.data.fetch``, never a training run) may install Debian's Fashion-MNIST package."""
    src = _SOURCES[name]
    folder = src.find(root)
    if folder is None and install and name == "fmnist" and not given and _may_apt() and _apt_install_fmnist():
        root = DEBIAN_FMNIST
        folder = src.find(root)
    if folder is None and download:
        _download(src, root)
        folder = src.find(root)
    if folder is None:
        raise DataError(src.missing(root))
    return folder


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
    folder = _locate(name, base, given, download, install)
    src = _SOURCES[name]
    if verify:
        verify_files(folder, checksums if checksums is not None else src.table())
    arrays = src.parse(folder)
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
