"""spmi.compare: runs side by side, the best-val selection, and its one-line errors."""

import json

import pytest

from spmi.compare import main


def write_run(folder, records):
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(folder)


@pytest.fixture
def runs(tmp_path):
    spmi = write_run(tmp_path / "spmi", [
        {"epoch": 0, "val/acc": 0.70, "test/acc": 0.71, "prior": [0.5, 0.5]},
        {"epoch": 1, "val/acc": 0.80, "test/acc": 0.79, "cand/unl_size": 2.5},
        {"epoch": 2, "val/acc": 0.75, "test/acc": 0.81, "cand/unl_size": 1.5},
    ])
    # written out of order, one epoch shorter
    proden = write_run(tmp_path / "other" / "proden", [
        {"epoch": 1, "val/acc": 0.60, "test/acc": 0.62},
        {"epoch": 0, "val/acc": 0.60, "test/acc": 0.50},
    ])
    return spmi, proden


def test_table_and_summary(runs, capsys):
    assert main([*runs, "--metric", "test/acc", "--metric", "cand/unl_size"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "| epoch | spmi test/acc | spmi cand/unl_size | proden test/acc | proden cand/unl_size |"
    assert out[1] == "|---|---|---|---|---|"
    assert out[2] == "| 1 | 0.7100 | – | 0.5000 | – |"
    assert out[3] == "| 2 | 0.7900 | 2.5000 | 0.6200 | – |"
    assert out[4] == "| 3 | 0.8100 | 1.5000 | – | – |"
    # best val epoch, not best test; the first of tied val epochs
    assert "spmi: 3 epochs, final val 0.7500 test 0.8100, best val 0.8000 at epoch 2 (test there 0.7900)" in out
    assert "proden: 2 epochs, final val 0.6000 test 0.6200, best val 0.6000 at epoch 1 (test there 0.5000)" in out


def test_default_metric_and_same_names(runs, tmp_path, capsys):
    twin = write_run(tmp_path / "again" / "spmi", [{"epoch": 0, "val/acc": 0.1, "test/acc": 0.2}])
    main([runs[0], twin])
    assert capsys.readouterr().out.splitlines()[0] == "| epoch | spmi | spmi#2 |"


def test_a_pipe_in_a_run_name_keeps_the_table_columns(tmp_path, capsys):
    main([write_run(tmp_path / "lr|0.1", [{"epoch": 0, "val/acc": 0.1, "test/acc": 0.2}])])
    assert capsys.readouterr().out.splitlines()[:3] == ["| epoch | lr\\|0.1 |", "|---|---|", "| 1 | 0.2000 |"]


def test_errors_name_the_problem(runs, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main([runs[0], str(tmp_path / "missing")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "missing holds no metrics.jsonl records" in err and "--out" in err
    with pytest.raises(SystemExit):
        main([runs[0], "--metric", "prior"])  # a list, not a number
    err = capsys.readouterr().err
    assert "no run records the metric 'prior'" in err and "cand/unl_size" in err
