"""Parsers of the on-disk dataset formats (idx, CIFAR pickles, SVHN .mat), MD5 checks, and
the format descriptions a dataset's registry entry names (``Idx``, ``Cifar``, ``Svhn``).

All readers return numpy arrays ``x`` uint8 [N, C, H, W] and ``y`` int64 [N].
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import io
import pickle
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from .errors import DataError

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
_CHUNK = 1 << 20
_REFETCH = "delete it and re-download (--download) or restore the original file"


def resolve(folder: Path, name: str) -> Path | None:
    """Path of ``name`` in ``folder``, falling back to ``name.gz``; None if neither exists."""
    for path in (folder / name, folder / f"{name}.gz"):
        if path.is_file():
            return path
    return None


def _open(path: Path) -> io.BufferedIOBase:
    """Open ``path`` for reading, transparently decompressing ``.gz`` files."""
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def md5_file(path: Path) -> str:
    """MD5 hex digest of the file's bytes (decompressed bytes for ``.gz`` files)."""
    digest = hashlib.md5()
    try:
        with _open(path) as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"cannot read {path} ({err}); {_REFETCH}") from None
    return digest.hexdigest()


def verify_files(folder: str | Path, table: dict[str, str]) -> dict[str, str]:
    """Check each ``name -> md5`` of ``table`` against the file in ``folder`` (or ``name.gz``);
    the MD5 sums found (equal to ``table``'s, lower case).

    A ``.gz`` file is compared through its decompressed bytes. Raises DataError naming the
    first missing or mismatching file.
    """
    folder, found = Path(folder), {}
    for name, expected in table.items():
        path = resolve(folder, name)
        if path is None:
            raise DataError(f"missing file {folder / name}; re-download the dataset (--download)")
        found[name] = got = md5_file(path)
        if got != expected.lower():
            raise DataError(f"checksum mismatch for {path} (md5 {got}, expected {expected}); {_REFETCH}")
    return found


# ---------------------------------------------------------------- idx (MNIST family)


def _read_bytes(path: Path) -> bytes:
    try:
        with _open(path) as f:
            return f.read()
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"cannot read {path} ({err}); {_REFETCH}") from None


def read_idx(path: str | Path) -> np.ndarray:
    """Decode an idx file of unsigned bytes (magic 0x0000 08 ndim, big-endian int32 dims)."""
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte idx file (bad magic number); {_REFETCH}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated (incomplete idx header); {_REFETCH}")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    if len(raw) - header != int(np.prod(dims)):
        raise DataError(f"{path} holds {len(raw) - header} data bytes, header says {dims}; {_REFETCH}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


def read_idx_pair(images: str | Path, labels: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read an idx image file [N, H, W] and label file [N] into ``x`` [N,1,H,W], ``y`` int64."""
    x, y = read_idx(images), read_idx(labels)
    if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
        raise DataError(f"{images} / {labels}: shapes {x.shape} / {y.shape} do not form an image set; {_REFETCH}")
    return x[:, None], y.astype(np.int64)


# ---------------------------------------------------------------- CIFAR pickles


def _allowed_globals() -> dict[tuple[str, str], object]:
    """numpy's own (de)serialisation helpers, under both the numpy 1 and numpy 2 module names."""
    helpers = {
        ("multiarray", "_reconstruct"): np.zeros(1).__reduce__()[0],
        ("multiarray", "scalar"): np.int64(0).__reduce__()[0],
        ("numeric", "_frombuffer"): np.zeros(1).__reduce_ex__(5)[0],
    }
    allowed: dict[tuple[str, str], object] = {
        (f"numpy.{pkg}.{mod}", name): fn for (mod, name), fn in helpers.items() for pkg in ("core", "_core")
    }
    return allowed | {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,
    }


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that only builds plain containers and numpy arrays (no arbitrary code)."""

    allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> object:
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"forbidden global {module}.{name}") from None


def read_pickle(path: str | Path) -> dict:
    """Load a CIFAR-style pickled dict (Python 2 strings decoded as latin-1)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, encoding="latin1").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError) as err:
        raise DataError(f"cannot unpickle {path} ({err}); {_REFETCH}") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path} does not hold a CIFAR batch dict; {_REFETCH}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def read_cifar_batch(path: str | Path, label_key: str = "labels") -> tuple[np.ndarray, np.ndarray]:
    """Decode a CIFAR batch: ``data`` rows are 1024 R, 1024 G, 1024 B bytes (row-major 32x32)."""
    batch = read_pickle(path)
    if "data" not in batch or label_key not in batch:
        raise DataError(f"{path} lacks 'data' or {label_key!r}; {_REFETCH}")
    data = np.asarray(batch["data"], dtype=np.uint8)
    y = np.asarray(batch[label_key], dtype=np.int64).reshape(-1)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(y):
        raise DataError(f"{path}: data {data.shape} / labels {y.shape} are not CIFAR-shaped; {_REFETCH}")
    return data.reshape(-1, 3, 32, 32), y


def read_cifar_batches(paths: list[Path], label_key: str = "labels") -> tuple[np.ndarray, np.ndarray]:
    """Decode and concatenate several CIFAR batches."""
    parts = [read_cifar_batch(p, label_key) for p in paths]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


# ---------------------------------------------------------------- SVHN .mat


def read_svhn_mat(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Decode an SVHN ``*_32x32.mat``: ``X`` [H, W, C, N] -> [N, C, H, W]; label 10 -> 0."""
    from scipy.io import loadmat

    path = Path(path)
    try:
        mat = loadmat(path, variable_names=["X", "y"])
    except (OSError, ValueError, TypeError, NotImplementedError) as err:
        raise DataError(f"cannot read {path} as MATLAB v5 ({err}); {_REFETCH}") from None
    if "X" not in mat or "y" not in mat:
        raise DataError(f"{path} lacks the 'X' or 'y' variable; {_REFETCH}")
    x, y = mat["X"], np.asarray(mat["y"]).reshape(-1).astype(np.int64)
    if x.ndim != 4 or x.shape[2] != 3 or x.shape[3] != len(y):
        raise DataError(f"{path}: X {x.shape} / y {y.shape} are not SVHN-shaped; {_REFETCH}")
    return x.astype(np.uint8, copy=False).transpose(3, 2, 0, 1), np.where(y == 10, 0, y)


# ---------------------------------------------------------------- format descriptions


class Format:
    """An on-disk layout: the files a dataset folder holds and how to decode them into
    ``(train_x, train_y, test_x, test_y)``."""

    gz: ClassVar[bool] = False  # whether ``name.gz`` may stand for ``name``

    def files(self) -> tuple[str, ...]:
        """The files, training files first."""
        raise NotImplementedError

    def locate(self, folder: Path, name: str) -> Path | None:
        """Path of file ``name`` in ``folder``, or None."""
        if self.gz:
            return resolve(folder, name)
        return folder / name if (folder / name).is_file() else None

    def parse(self, folder: Path) -> Arrays:
        raise NotImplementedError


@dataclass(frozen=True)
class Idx(Format):
    """MNIST-family idx files ``{prefix}-images-idx3-ubyte`` and ``{prefix}-labels-idx1-ubyte``
    for the training and test prefixes, each possibly gzipped."""

    train: str = "train"
    test: str = "t10k"
    gz: ClassVar[bool] = True

    def files(self) -> tuple[str, ...]:
        return tuple(f"{p}-{kind}-ubyte" for p in (self.train, self.test) for kind in ("images-idx3", "labels-idx1"))

    def parse(self, folder: Path) -> Arrays:
        def pair(prefix: str) -> tuple[np.ndarray, np.ndarray]:
            images = resolve(folder, f"{prefix}-images-idx3-ubyte")
            labels = resolve(folder, f"{prefix}-labels-idx1-ubyte")
            assert images is not None and labels is not None
            return read_idx_pair(images, labels)

        return *pair(self.train), *pair(self.test)


@dataclass(frozen=True)
class Cifar(Format):
    """CIFAR pickled batches: the training files (concatenated in order), the test files,
    and the dict key of the labels."""

    train: tuple[str, ...]
    test: tuple[str, ...]
    label_key: str = "labels"

    def files(self) -> tuple[str, ...]:
        return self.train + self.test

    def _read(self, folder: Path, names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        if len(names) == 1:
            return read_cifar_batch(folder / names[0], self.label_key)
        return read_cifar_batches([folder / n for n in names], self.label_key)

    def parse(self, folder: Path) -> Arrays:
        return *self._read(folder, self.train), *self._read(folder, self.test)


@dataclass(frozen=True)
class Svhn(Format):
    """SVHN's MATLAB files, one for training and one for testing."""

    train: str = "train_32x32.mat"
    test: str = "test_32x32.mat"

    def files(self) -> tuple[str, ...]:
        return self.train, self.test

    def parse(self, folder: Path) -> Arrays:
        return *read_svhn_mat(folder / self.train), *read_svhn_mat(folder / self.test)
