"""Writers of tiny datasets in the exact real on-disk formats, for tests.

Each writer returns ``(train_x, train_y, test_x, test_y)`` as numpy arrays in the layout the
loaders must produce: images uint8 [N, C, H, W], labels int64 [N]. The expected images are
derived from the raw file layout by explicit index arithmetic, independent of the parsers.
Image 0 of each training set carries ``MARKER_RGB`` at pixel ``MARKER_HW`` (a distinct
value per channel), so a channel/axis mix-up is caught.
"""

from __future__ import annotations

import gzip
import hashlib
import pickle
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np

from spmi.data import DatasetInfo, get_info
from spmi.data.formats import Cifar, Format, Idx, Svhn

MARKER_HW = (2, 7)
MARKER_RGB = (201, 102, 53)
Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


# ---------------------------------------------------------------- Fashion-MNIST idx


def _idx_bytes(array: np.ndarray) -> bytes:
    """Magic 0x00 0x00 0x08 ndim, big-endian uint32 dims, then the bytes."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write(path: Path, data: bytes, gz: bool) -> None:
    if gz:
        with gzip.open(path.with_name(path.name + ".gz"), "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def write_idx(root: str | Path, n_train: int, n_test: int, gz: bool = True, seed: int = 0,
              prefixes: tuple[str, str] = ("train", "t10k"), classes: int = 10, size: int = 28) -> Arrays:
    """Write ``{prefix}-{images-idx3,labels-idx1}-ubyte[.gz]`` for the training and test prefixes into ``root``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = _rng(seed)
    out = []
    for prefix, n in zip(prefixes, (n_train, n_test), strict=True):
        x = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
        y = rng.integers(0, classes, n, dtype=np.uint8)
        _write(root / f"{prefix}-images-idx3-ubyte", _idx_bytes(x), gz)
        _write(root / f"{prefix}-labels-idx1-ubyte", _idx_bytes(y), gz)
        out += [x[:, None].copy(), y.astype(np.int64)]
    return tuple(out)  # type: ignore[return-value]


def write_idx_fmnist(root: str | Path, n_train: int, n_test: int, gz: bool = True, seed: int = 0) -> Arrays:
    """Write ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`` into ``root``."""
    return write_idx(root, n_train, n_test, gz, seed)


# ---------------------------------------------------------------- CIFAR pickles


def _cifar_rows(rng: np.random.Generator, n: int, marker: bool) -> tuple[np.ndarray, np.ndarray]:
    """Random raw rows [n, 3072] (1024 R, 1024 G, 1024 B, each row-major) and the NCHW view."""
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    h, w = MARKER_HW
    if marker and n:
        for c, v in enumerate(MARKER_RGB):
            data[0, c * 1024 + h * 32 + w] = v
    c_, h_, w_ = np.meshgrid(np.arange(3), np.arange(32), np.arange(32), indexing="ij")
    return data, data[:, c_ * 1024 + h_ * 32 + w_]


def _dump(path: Path, obj: dict, legacy: bool) -> None:
    """Pickle ``obj``; ``legacy`` mimics the real files: protocol 2, ``numpy.core`` module names."""
    if legacy:
        raw = pickle.dumps(obj, protocol=2).replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    else:
        raw = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    path.write_bytes(raw)


def write_cifar(folder: str | Path, train: tuple[str, ...], test: tuple[str, ...], n_train: int, n_test: int,
                label_key: str = "labels", classes: int = 10, seed: int = 0, legacy: bool = False) -> Arrays:
    """Write CIFAR-style pickled batches into ``folder``: ``n_train`` rows in each training
    file, ``n_test`` in each test file; labels under ``label_key`` (and, next to CIFAR-100's
    ``fine_labels``, ``coarse_labels``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = _rng(seed)
    xs, ys = [], []
    files = [(name, n_train) for name in train] + [(name, n_test) for name in test]
    for i, (name, n) in enumerate(files):
        data, x = _cifar_rows(rng, n, marker=i == 0)
        y = rng.integers(0, classes, n)
        batch = {"batch_label": name, label_key: y.tolist(), "data": data,
                 "filenames": [f"{name}_{j}.png" for j in range(n)]}
        if label_key == "fine_labels":
            batch["coarse_labels"] = (y // 5).tolist()
        _dump(folder / name, batch, legacy)
        xs.append(x)
        ys.append(y.astype(np.int64))
    k = len(train)
    return np.concatenate(xs[:k]), np.concatenate(ys[:k]), np.concatenate(xs[k:]), np.concatenate(ys[k:])


def write_cifar10(root: str | Path, n_per_batch: int, n_test: int, seed: int = 0) -> Arrays:
    """Write ``root/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}``."""
    folder = Path(root) / "cifar-10-batches-py"
    train = tuple(f"data_batch_{i}" for i in range(1, 6))
    out = write_cifar(folder, train, ("test_batch",), n_per_batch, n_test, seed=seed, legacy=True)
    meta = {"label_names": [f"class{i}" for i in range(10)], "num_cases_per_batch": n_per_batch, "num_vis": 3072}
    _dump(folder / "batches.meta", meta, legacy=True)
    return out


def write_cifar100(root: str | Path, n_train: int, n_test: int, seed: int = 0) -> Arrays:
    """Write ``root/cifar-100-python/{train,test,meta}`` (labels under ``fine_labels``)."""
    folder = Path(root) / "cifar-100-python"
    out = write_cifar(folder, ("train",), ("test",), n_train, n_test, "fine_labels", 100, seed)
    meta = {"fine_label_names": [f"f{i}" for i in range(100)], "coarse_label_names": [f"c{i}" for i in range(20)]}
    _dump(folder / "meta", meta, legacy=False)
    return out


# ---------------------------------------------------------------- SVHN .mat


def write_svhn(root: str | Path, n_train: int, n_test: int, seed: int = 0,
               names: tuple[str, str] = ("train_32x32.mat", "test_32x32.mat")) -> Arrays:
    """Write ``root/{train,test}_32x32.mat``: ``X`` uint8 [32,32,3,N], ``y`` [N,1] in 1..10 (10 = digit 0)."""
    from scipy.io import savemat

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = _rng(seed)
    out: list[np.ndarray] = []
    for i, (name, n) in enumerate(zip(names, (n_train, n_test), strict=True)):
        big_x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = rng.integers(1, 11, (n, 1)).astype(np.uint8)
        if n:
            y[0, 0] = 10
        if i == 0 and n:
            big_x[MARKER_HW[0], MARKER_HW[1], :, 0] = MARKER_RGB
        savemat(root / name, {"X": big_x, "y": y})
        x = np.einsum("hwcn->nchw", big_x).copy()
        out += [x, np.where(y[:, 0] == 10, 0, y[:, 0]).astype(np.int64)]
    return tuple(out)  # type: ignore[return-value]


# ---------------------------------------------------------------- any registered dataset


def _idx_spec(info: DatasetInfo, folder: Path, n_train: int, n_test: int, seed: int) -> Arrays:
    fmt = info.source.format
    return write_idx(folder, n_train, n_test, seed=seed, prefixes=(fmt.train, fmt.test), classes=info.num_classes,
                     size=info.size)


def _cifar_spec(info: DatasetInfo, folder: Path, n_train: int, n_test: int, seed: int) -> Arrays:
    fmt = info.source.format
    return write_cifar(folder, fmt.train, fmt.test, n_train, n_test, fmt.label_key, info.num_classes, seed)


def _svhn_spec(info: DatasetInfo, folder: Path, n_train: int, n_test: int, seed: int) -> Arrays:
    return write_svhn(folder, n_train, n_test, seed, info.source.format.files())


# one writer per on-disk format (a new dataset in a known format needs none)
WRITERS: dict[type[Format], Callable[[DatasetInfo, Path, int, int, int], Arrays]] = {
    Idx: _idx_spec, Cifar: _cifar_spec, Svhn: _svhn_spec}


def write_dataset(name: str, root: str | Path, n_train: int, n_test: int, seed: int = 0) -> tuple[Path, Arrays]:
    """Write tiny files of registered dataset ``name`` where its spec looks first under
    ``root``; return that folder and the expected arrays (``n_train`` images per training
    file). A format without a writer here fails the calling test by name."""
    info = get_info(name)
    writer = WRITERS.get(type(info.source.format))
    if writer is None:
        raise NotImplementedError(f"tests/datagen.py has no writer of {type(info.source.format).__name__} "
                                  f"files ({name}): add one to WRITERS")
    folder = Path(root) / info.source.folders[0]
    return folder, writer(info, folder, n_train, n_test, seed)


# ---------------------------------------------------------------- checksums


def md5_table(folder: str | Path) -> dict[str, str]:
    """MD5 of every file in ``folder``; ``x.gz`` is listed as ``x`` with its decompressed MD5."""
    table = {}
    for path in sorted(Path(folder).iterdir()):
        if not path.is_file():
            continue
        if path.suffix == ".gz":
            table[path.name[:-3]] = hashlib.md5(gzip.decompress(path.read_bytes())).hexdigest()
        else:
            table[path.name] = hashlib.md5(path.read_bytes()).hexdigest()
    return table
