"""`python -m spmi.train`: bad input is one clear line before any work; a run resumes."""

import pytest
import torch
from conftest import tiny

from spmi.data import DATASETS
from spmi.methods import list_methods
from spmi.records import read_jsonl
from spmi.train import main


def error_of(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "mnist"], f"unknown dataset 'mnist'; choose one of: {', '.join(sorted(DATASETS))}"),
    (["--method", "pico"], f"unknown method 'pico'; choose one of: {', '.join(list_methods())}"),
    (["--labelled", "25"], "--labelled 25 must be a positive multiple of the 10 classes of fmnist"),
    (["--labelled", "0"], "labelled=0 is too small"),
    (["--partial-rate", "1.0"], "partial_rate=1.0 must be < 1.0"),
    (["--partial-rate", "0"], "partial_rate=0.0 must be > 0.0"),
    (["--partial-labels", "hierarchical"], "--partial-labels hierarchical needs a dataset with superclasses"),
    (["--model", "resnet50"], "unknown model 'resnet50'"),
    (["--method", "cc_fixmatch", "--tau", "2"], "--tau does not apply to method cc_fixmatch"),
    (["--score", "entropy"], "invalid choice: 'entropy' (choose from 'official', 'kl')"),
    (["--lr", "fast"], "argument --lr: invalid float value: 'fast'"),
    (["--device", "tpu"], "device"),
    (["--resume"], "--resume needs --out"),
])
def test_bad_input_is_one_line(argv, message, capsys):
    assert message in error_of(argv, capsys)


def test_labelled_above_training_size(root, capsys):
    err = error_of(tiny(root, "--labelled", "1000"), capsys)
    assert "1000" in err


def test_missing_data_says_how_to_get_it(tmp_path, capsys):
    err = error_of(["--dataset", "fmnist", "--data-root", str(tmp_path)], capsys)
    assert "not found" in err and "apt-get install dataset-fashion-mnist" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_gpu_asked_for_where_none_is(capsys):
    assert "no CUDA GPU is available" in error_of(["--device", "cuda"], capsys)


def test_resume_without_checkpoint(tmp_path, root, capsys):
    err = error_of(tiny(root, "--out", str(tmp_path / "r"), "--resume"), capsys)
    assert "no checkpoint at" in err


def test_run_then_resume_continues(tmp_path, root, capsys):
    out = str(tmp_path / "run")
    assert main(tiny(root, "--out", out, "--epochs", "1")) == 0
    # extending the run (another schedule length: said explicitly): the resumed run starts at
    # epoch 1 and the record file keeps epoch 0 once
    assert main(tiny(root, "--out", out, "--epochs", "2", "--resume", "--allow-schedule-change")) == 0
    printed = capsys.readouterr().out
    assert "start epoch=1" in printed and "epoch 2/2" in printed
    assert [r["epoch"] for r in read_jsonl(f"{out}/metrics.jsonl")] == [0, 1]
