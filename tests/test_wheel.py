"""The package as users install it: the wheel built from the repository's files, installed
into a throwaway folder, holds every file a search reads, and its ``spmi-search`` runs a
one-trial search (the shipped search space, tiny generated Fashion-MNIST) from a folder
outside the repository, importing nothing from the repository."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import datagen

REPO = Path(__file__).resolve().parent.parent


def source_copy(dest: Path) -> Path:
    """The repository's files (tracked and new, not ignored ones) copied to ``dest``: the
    wheel is built from what a clone holds, never from local leftovers (``build/``)."""
    listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, listed):
        if (REPO / name).is_file():  # a tracked file deleted in the working tree is not copied
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    return dest


def pip_run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The wheel, built (pip's isolated build) and installed with ``--target``."""
    root = tmp_path_factory.mktemp("wheel")
    src, wheels, target = source_copy(root / "src"), root / "wheels", root / "site"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    pip_run([*pip, "wheel", "--no-deps", "-q", "-w", str(wheels), str(src)])
    (wheel,) = wheels.glob("spmi_tune-*.whl")
    pip_run([*pip, "install", "--no-deps", "-q", "--target", str(target), str(wheel)])
    return {"wheel": wheel, "target": target, "root": root, "src": src}


def test_the_wheel_holds_every_package_file_and_the_search_spaces(installed: dict[str, Path]) -> None:
    names = set(zipfile.ZipFile(installed["wheel"]).namelist())
    src = installed["src"]
    for package in ("spmi", "tuning", "search_spaces"):  # every file of the packages, code or data
        files = [p.relative_to(src).as_posix() for p in (src / package).rglob("*") if p.is_file()]
        assert files and set(files) <= names, sorted(set(files) - names)
    spaces = {n for n in names if n.startswith("search_spaces/") and n.endswith(".yaml")}
    assert len(spaces) == 4 and "search_spaces/spmi.yaml" in spaces


@pytest.mark.slow
def test_the_installed_wheel_searches_from_a_folder_outside_the_repository(installed: dict[str, Path]) -> None:
    root, target = installed["root"], installed["target"]
    elsewhere = root / "elsewhere"
    datagen.write_idx_fmnist(elsewhere / "data", 300, 60)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(target)}
    done = subprocess.run([sys.executable, "-c", "import spmi, tuning, search_spaces, tuning.plan.settings as s; "
                           "print(spmi.__file__, tuning.__file__, search_spaces.__file__, s.default_space('spmi'))"],
                          cwd=elsewhere, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    where = done.stdout.split()
    assert all(Path(p).is_relative_to(target) for p in where), where  # the repository is not imported
    assert not Path(where[-1]).is_relative_to(REPO)
    shown = subprocess.run([str(target / "bin" / "spmi-confirm"), "--help"], cwd=elsewhere, env=env,
                           capture_output=True, text=True)
    assert shown.returncode == 0 and shown.stdout.startswith("usage: spmi-confirm "), shown.stdout + shown.stderr
    # the shipped space's quick preset (warm-up up to 3 epochs), one trial of 4 epochs
    argv = [str(target / "bin" / "spmi-search"), "--dataset", "fmnist", "--preset", "quick", "--data-root", "data",
            "--no-verify-data", "--labelled", "20", "--val-size", "50", "--unlabelled-size", "100",
            "--set", "batch_size=16", "--set", "eval_batch_size=64", "--num-samples", "1", "--max-epochs", "4",
            "--storage-path", "hpo", "--name", "wheel"]
    done = subprocess.run(argv, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    assert "best settings: lr=" in out, out[-3000:]
    assert "its test accuracy: spmi-evaluate models:/spmi-fmnist@best" in out  # named as the search was started
    assert (elsewhere / "hpo" / "wheel" / "report" / "report.md").is_file()
    space = (elsewhere / "hpo" / "wheel" / "space.yaml").read_text()
    assert f"{target / 'search_spaces' / 'spmi.yaml'} resolved for dataset fmnist" in space  # read from the install
    assert '"git_commit": "unknown"' in (elsewhere / "hpo" / "wheel" / "search.json").read_text()  # no checkout
