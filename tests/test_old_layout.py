"""A search started by the layout before tuning/'s wings (layout 1) is still read, and its
resumption is refused in one line. The fixture is a real search of that layout (``--preset
quick --seed 0 --max-concurrent 1``) cut down to two of its trials: its plan, space copy,
Tune experiment state (which pickled ``tuning.runner.trial_dirname`` in every trial) and
the trials' results (no checkpoints)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "layout1_search"


@pytest.fixture
def old(tmp_path: Path) -> Path:
    folder = tmp_path / "before"  # the search's name, as its search.json says
    shutil.copytree(FIXTURE, folder)
    return folder


def test_its_trials_and_report_are_read(old: Path) -> None:
    from tuning.results.report import make_report
    report = make_report(old, log_mlflow=False)
    table = report.trials.table.set_index("trial_id")
    assert report.plan.version == 1 and len(table) == 2
    assert table.loc["fb875a4b", ["status", "epochs", "val_acc", "test_acc"]].tolist() == ["finished", 8, 0.8045,
                                                                                          0.7936]
    assert table.loc["d349e462", ["status", "epochs", "val_acc"]].tolist() == ["stopped", 5, 0.7645]
    assert report.best.trial_id == "fb875a4b" and report.best.params["tau"] == 3.0
    assert (old / "report" / "report.md").read_text().startswith("# Search before: spmi on fmnist")


def test_a_confirmation_can_start_from_it(old: Path) -> None:
    from tuning.cli.confirm import top_configurations
    from tuning.plan.search_plan import load_plan
    top = top_configurations(load_plan(old), 2)
    assert [(c.trial_id, c.epochs) for c in top] == [("fb875a4b", 8), ("d349e462", 5)]


def test_its_resumption_is_refused_in_one_line(old: Path, capsys: pytest.CaptureFixture) -> None:
    from tuning.cli import search
    code = search.main(["--dataset", "fmnist", "--preset", "quick", "--storage-path", str(old.parent), "--name",
                        "before", "--resume"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.splitlines() == [
        f"error: {old}: this search was started by an earlier layout of tuning/ (version 1, this one writes 2), "
        f"whose saved Ray Tune state names modules that do not exist here, so it cannot be resumed; its trials "
        f"and report stay readable (python tuning/report.py {old}); start a new search with another --name"]
