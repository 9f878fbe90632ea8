"""Every command's ``--help`` states each default once (and never "None"), and names the
command as it was started: console script, ``python -m`` or the script's path."""

from __future__ import annotations

import argparse
import importlib
import re
import sys
import types

import pytest

from spmi.cli_options import DefaultsFormatter, invoked_as
from tuning.plan import settings as S

CLIS = {"spmi-train": "spmi.train", "spmi-compare": "spmi.compare", "spmi-fetch": "spmi.data.fetch",
        "spmi-search": "tuning.cli.search", "spmi-report": "tuning.cli.report", "spmi-confirm": "tuning.cli.confirm",
        "spmi-reproduce": "tuning.cli.reproduce", "spmi-evaluate": "tuning.cli.evaluate"}


def help_text(module: str, capsys: pytest.CaptureFixture) -> str:
    with pytest.raises(SystemExit) as done:
        importlib.import_module(module).main(["--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


def entries(text: str) -> list[str]:
    """The help's argument entries: from a line that starts with two spaces and a name to the next."""
    body = text.split("\n\n", 1)[1]
    return [e for e in re.split(r"\n(?=  [-a-zA-Z])", body) if e.startswith("  ")]


@pytest.mark.parametrize("module", sorted(CLIS.values()))
def test_each_default_is_printed_once_and_never_none(module: str, capsys: pytest.CaptureFixture) -> None:
    text = help_text(module, capsys)
    found = entries(text)
    assert len(found) >= 2, text
    for entry in found:
        flat = " ".join(entry.split())
        assert flat.lower().count("default") <= 1, flat
        assert "default: None" not in flat, flat
        assert "default: False" not in flat or ", --no-" in flat, flat  # only an --x/--no-x pair says it


def test_the_search_help_gives_the_true_defaults(capsys: pytest.CaptureFixture,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "2000")  # one line per entry: no word broken at a hyphen
    flat = " ".join(help_text("tuning.cli.search", capsys).split())
    quick = S.PRESETS["quick"]
    assert f"trials (default: {S.DEFAULT_NUM_SAMPLES}; --preset quick: {quick['num_samples']})" in flat
    assert f"(default: {S.PAPER_EPOCHS}, the paper's; --preset quick: {quick['max_epochs']})" in flat
    assert f"ASHA reduction factor (default: {S.DEFAULT_REDUCTION_FACTOR}; --preset quick: 2)" in flat
    assert f"held-out validation images, > 0 (default: 5000; --preset quick: {quick['config']['val_size']})" in flat
    assert f"(a CPU demo: {S.QUICK_DEMO_TIME})" in flat and "~15-minute" not in flat
    assert "--seed SEED seed of the Optuna TPE sampler (default: 0)" in flat
    assert "--storage-path STORAGE_PATH" in flat and "(default: hpo_results)" in flat


def test_the_formatter_adds_a_default_only_where_none_is_stated() -> None:
    p = argparse.ArgumentParser(prog="x", formatter_class=DefaultsFormatter)
    p.add_argument("--a", type=int, default=3, help="plain")
    p.add_argument("--b", type=int, default=3, help="stated (default: three)")
    p.add_argument("--c", type=int, help="no value")
    p.add_argument("--d", action="store_true", help="a switch")
    p.add_argument("--e", type=int, default=0, help="zero")
    flat = " ".join(p.format_help().split())
    assert "plain (default: 3)" in flat and "stated (default: three) --c" in flat
    assert "no value --d" in flat and "a switch --e" in flat and "zero (default: 0)" in flat


def started(monkeypatch: pytest.MonkeyPatch, argv0: str, main_module: str | None) -> None:
    """Make this process look started as ``argv0`` (``python -m main_module`` when given)."""
    main = types.ModuleType("__main__")
    main.__spec__ = None if main_module is None else types.SimpleNamespace(name=main_module)
    monkeypatch.setitem(sys.modules, "__main__", main)
    monkeypatch.setattr(sys, "argv", [argv0, "--help"])


@pytest.mark.parametrize(("argv0", "main_module", "usage", "evaluate"), [
    ("/venv/bin/spmi-search", None, "spmi-search", "spmi-evaluate"),
    ("/repo/tuning/search.py", "tuning.search", "python -m tuning.search", "python -m tuning.evaluate"),
    ("tuning/search.py", None, "python tuning/search.py", "python tuning/evaluate.py"),
    ("/repo/tuning/search.py", None, "python /repo/tuning/search.py", "python /repo/tuning/evaluate.py"),
    ("/venv/bin/pytest", None, "python tuning/search.py", "python tuning/evaluate.py"),  # main() from Python
    ("/x/pytest/__main__.py", "pytest", "python tuning/search.py", "python tuning/evaluate.py"),
])
def test_the_command_is_named_as_it_was_started(monkeypatch: pytest.MonkeyPatch, argv0: str,
                                                main_module: str | None, usage: str, evaluate: str) -> None:
    started(monkeypatch, argv0, main_module)
    assert invoked_as("tuning.search", "python tuning/search.py") == usage
    assert invoked_as("tuning.evaluate", "python tuning/evaluate.py", like="tuning.search") == evaluate
    from tuning.cli import search
    assert search.build_parser().format_usage().startswith(f"usage: {usage} ")
