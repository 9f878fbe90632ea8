import sys
from pathlib import Path

# tests import the shared fixture writers as `datagen`
sys.path.insert(0, str(Path(__file__).parent))


import contextlib  # noqa: E402
import subprocess  # noqa: E402

import pytest  # noqa: E402


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
