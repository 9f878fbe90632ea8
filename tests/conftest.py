import sys
from pathlib import Path

# tests import the shared fixture writers as `datagen`
sys.path.insert(0, str(Path(__file__).parent))


import contextlib  # noqa: E402
import subprocess  # noqa: E402

import pytest  # noqa: E402

from datagen import write_idx_fmnist  # noqa: E402


@pytest.fixture
def readonly_dir(tmp_path):
    """A read-only folder that even root cannot write (a read-only bind mount); skipped
    where mounting is not allowed (a read-only mode bit does not stop root)."""
    src, ro = tmp_path / "src", tmp_path / "ro"
    src.mkdir()
    ro.mkdir()
    done = subprocess.run(["mount", "--bind", str(src), str(ro)], capture_output=True)
    if done.returncode != 0:
        pytest.skip("cannot bind-mount here")
    try:
        if subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], capture_output=True).returncode != 0:
            pytest.skip("cannot remount read-only here")
        yield ro
    finally:
        with contextlib.suppress(OSError):
            subprocess.run(["umount", str(ro)], capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A folder of tiny generated Fashion-MNIST files (300 training, 40 test images)."""
    root = tmp_path_factory.mktemp("fmnist")
    write_idx_fmnist(root, n_train=300, n_test=40)
    return str(root)


def tiny(root, *extra):
    """The arguments of a tiny two-epoch ``python -m spmi.train`` run on ``root`` (warm-up
    1: the second epoch runs SPMI's label channel), then ``extra``."""
    return ["--dataset", "fmnist", "--data-root", root, "--no-verify-data", "--labelled", "20", "--val-size", "30",
            "--unlabelled-size", "64", "--batch-size", "16", "--epochs", "2", "--warmup", "1", "--no-progress",
            *extra]
