"""Random images in the real on-disk formats, for timing on machines without the datasets.

Fashion-MNIST: ``{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz`` (IDX: magic 0x0000 08 ndim,
big-endian uint32 dims, bytes). CIFAR-10: ``cifar-10-batches-py/{data_batch_1..5,test_batch,
batches.meta}`` (pickled dicts; ``data`` rows of 1024 R, 1024 G, 1024 B bytes). Labels are
uniform; the images carry a weak class signal (a class-dependent brightness) so training
is not pure noise, but only timings are meant to be read from them.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np


def _images(rng: np.random.Generator, n: int, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    y = rng.integers(0, 10, n)
    x = rng.integers(0, 200, (n, *shape)) + (y * 5).reshape(-1, *([1] * len(shape)))
    return x.astype(np.uint8), y.astype(np.uint8)


def _idx(array: np.ndarray) -> bytes:
    return struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_fmnist(root: str | Path, n_train: int = 60000, n_test: int = 10000, seed: int = 0) -> Path:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x, y = _images(rng, n, (28, 28))
        for kind, arr in (("images-idx3", x), ("labels-idx1", y)):
            with gzip.open(root / f"{prefix}-{kind}-ubyte.gz", "wb", compresslevel=1) as f:
                f.write(_idx(arr))
    return root


def write_cifar10(root: str | Path, n_per_batch: int = 10000, n_test: int = 10000, seed: int = 0) -> Path:
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        n = n_test if name == "test_batch" else n_per_batch
        x, y = _images(rng, n, (3, 32, 32))
        batch = {"batch_label": name, "labels": y.astype(int).tolist(), "data": x.reshape(n, 3 * 32 * 32),
                 "filenames": [f"{name}_{j}.png" for j in range(n)]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {"label_names": [f"class{i}" for i in range(10)], "num_cases_per_batch": n_per_batch, "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return Path(root)
