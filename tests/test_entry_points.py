"""The console commands of pyproject.toml resolve to the CLIs' ``main`` functions, in
packages that an install ships, and start (``--help``) as the generated wrapper starts
them; ``python -m spmi.train`` and ``python tuning/search.py`` keep working."""

from __future__ import annotations

import fnmatch
import importlib
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
SCRIPTS: dict[str, str] = PROJECT["project"]["scripts"]
# how each CLI is documented to run without an install (cwd: the repository), and its usage line then
CLASSIC = {"spmi.train": (["-m", "spmi.train"], "python -m spmi.train"),
           "tuning.search": (["tuning/search.py"], "python tuning/search.py"),
           "tuning.confirm": (["-m", "tuning.confirm"], "python -m tuning.confirm")}


def test_every_cli_has_a_command():
    assert {"spmi-train", "spmi-compare", "spmi-fetch", "spmi-search", "spmi-report", "spmi-confirm",
            "spmi-reproduce", "spmi-evaluate"} <= set(SCRIPTS)
    cli_modules = {"spmi.train", "spmi.compare", "spmi.data.fetch"} | {
        ".".join(p.relative_to(REPO).with_suffix("").parts) for p in (REPO / "tuning").rglob("*.py")
        if "def main(" in p.read_text()}
    assert {target.split(":")[0] for target in SCRIPTS.values()} == cli_modules


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_command_target_is_a_callable_in_an_installed_package(name):
    module, _, attr = SCRIPTS[name].partition(":")
    include = PROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    package = module.rpartition(".")[0]
    assert any(fnmatch.fnmatch(package, pattern) for pattern in include), (module, include)
    parts = package.split(".")  # a regular package at every level (what setuptools' find ships)
    assert all((REPO.joinpath(*parts[:i]) / "__init__.py").is_file() for i in range(1, len(parts) + 1)), package
    assert callable(getattr(importlib.import_module(module), attr))


def test_every_command_is_spmi_and_its_modules_last_part():
    """What ``spmi.cli_options.invoked_as`` assumes to name a console script in usage lines."""
    for name, target in SCRIPTS.items():
        assert name == "spmi-" + target.partition(":")[0].rpartition(".")[2], (name, target)


def test_commands_start_as_their_wrappers_and_classic_forms_start_them():
    """``--help`` of each, in fresh interpreters (run side by side): the wrapper's call
    ``sys.exit(main())`` with the arguments in sys.argv, and the classic invocations; each
    usage line names the command as it was started."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    runs, usage = {}, {}
    for name, target in SCRIPTS.items():
        module, _, attr = target.partition(":")
        code = f"import sys; from {module} import {attr}; sys.argv[0] = {name!r}; sys.exit({attr}())"
        runs[name], usage[name] = [sys.executable, "-c", code, "--help"], name
    for module, (args, called) in CLASSIC.items():
        runs[module], usage[module] = [sys.executable, *args, "--help"], called
    procs = {name: subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True) for name, argv in runs.items()}
    for name, proc in procs.items():
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0 and out.startswith(f"usage: {usage[name]} "), (name, out[-2000:])
