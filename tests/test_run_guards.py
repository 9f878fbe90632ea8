"""`python -m spmi.train` never loses or silently falsifies a result: an existing run folder
is not overwritten, records are strict JSON, non-finite numbers are refused, a diverging
run stops with its own exit status, a damaged checkpoint or a changed schedule is a
one-line error, and no training run installs packages."""

import json

import pytest
from conftest import tiny

from spmi.config import TrainConfig
from spmi.data import DataError, load_dataset
from spmi.records import JsonlWriter, read_jsonl
from spmi.train import EXIT_BAD_INPUT, EXIT_DIVERGED, main
from spmi.trainer import Diverged, Trainer


def one_line_error(argv, capsys, code=EXIT_BAD_INPUT):
    try:
        got = main(argv)
    except SystemExit as exit_:
        got = exit_.code
    err = capsys.readouterr().err.strip()
    assert got == code, err
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


def strict_json(line):
    def refuse(name):
        raise ValueError(f"bare {name} in a record")
    return json.loads(line, parse_constant=refuse)


# ------------------------------------------------------------------ run folders


def test_rerun_into_a_run_folder_is_refused_and_keeps_the_run(root, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(tiny(root, "--out", str(out))) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    err = one_line_error(tiny(root, "--out", str(out), "--lr", "0.01"), capsys)
    assert "already holds a run" in err and "--resume" in err and "--overwrite" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_overwrite_moves_the_old_run_aside(root, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(tiny(root, "--out", str(out), "--epochs", "1")) == 0
    old_checkpoint = (out / "checkpoint.pt").read_bytes()
    assert main(tiny(root, "--out", str(out), "--overwrite")) == 0
    assert "moved the previous run" in capsys.readouterr().out
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("run.") and p.is_dir()]
    assert len(aside) == 1 and (aside[0] / "checkpoint.pt").read_bytes() == old_checkpoint
    assert [r["epoch"] for r in read_jsonl(aside[0] / "metrics.jsonl")] == [0]
    assert [r["epoch"] for r in read_jsonl(out / "metrics.jsonl")] == [0, 1]


def test_out_that_is_a_file_is_one_line(root, tmp_path, capsys):
    path = tmp_path / "afile"
    path.write_text("x")
    assert "is a file" in one_line_error(tiny(root, "--out", str(path)), capsys)
    under = one_line_error(tiny(root, "--out", str(path / "run")), capsys)
    assert "cannot write" in under


def test_records_are_strict_json_and_resume_truncates_to_the_checkpoint(tmp_path):
    path = tmp_path / "metrics.jsonl"
    writer = JsonlWriter(path)
    for epoch in range(3):
        writer({"epoch": epoch, "loss/total": float("nan"), "prior": [0.5, float("inf"), float("nan")]})
    rows = [strict_json(line) for line in path.read_text().splitlines()]
    assert rows[0]["prior"] == [0.5, None, None] and rows[0]["loss/total"] is None
    JsonlWriter(path, start_epoch=2)  # the checkpoint holds 2 epochs: the third is re-run
    assert [r["epoch"] for r in read_jsonl(path)] == [0, 1]


# ------------------------------------------------------------------ non-finite numbers


@pytest.mark.parametrize("flag, value", [("--lr", "nan"), ("--lr", "inf"), ("--momentum", "nan"),
                                         ("--tau", "nan"), ("--tau-u", "inf"), ("--partial-rate", "nan"),
                                         ("--weight-decay", "inf"), ("--lr-min-ratio", "nan")])
def test_non_finite_numbers_are_refused(root, flag, value, capsys):
    err = one_line_error(tiny(root, flag, value), capsys)
    assert "not a finite number" in err and flag.lstrip("-").replace("-", "_") in err


@pytest.fixture(scope="module")
def data(root):
    return load_dataset("fmnist", root, verify=False)


def test_a_diverging_trainer_stops_before_recording_the_epoch(data, tmp_path):
    cfg = TrainConfig(dataset="fmnist", labelled=20, val_size=30, unlabelled_size=64, batch_size=16, epochs=3,
                      lr=1e30, out=str(tmp_path / "run"), options={"warmup": 1})
    seen = []
    trainer = Trainer(cfg, data, callbacks=[lambda m, t: seen.append(m["epoch"])])
    with pytest.raises(Diverged, match="not finite") as info:
        trainer.fit()
    assert info.value.epoch == 0 and seen == [] and not (tmp_path / "run" / "checkpoint.pt").exists()


def test_a_diverging_run_exits_with_its_own_status(root, tmp_path, capsys):
    out = tmp_path / "run"
    err = one_line_error(tiny(root, "--out", str(out), "--lr", "1e30"), capsys, code=EXIT_DIVERGED)
    assert "diverged" in err and "epoch 1" in err
    assert EXIT_DIVERGED not in (0, 1, 2)
    assert read_jsonl(out / "metrics.jsonl") == []


# ------------------------------------------------------------------ resume


def test_a_damaged_checkpoint_is_one_line(root, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(tiny(root, "--out", str(out), "--epochs", "1")) == 0
    good = (out / "checkpoint.pt").read_bytes()
    for damaged in (good[: len(good) // 2], b"garbage"):
        (out / "checkpoint.pt").write_bytes(damaged)
        assert "unreadable" in one_line_error(tiny(root, "--out", str(out), "--resume"), capsys)


def test_resume_accepts_a_flag_that_restates_a_default(root, tmp_path, capsys):
    out = str(tmp_path / "run")
    args = tiny(root, "--out", out, "--epochs", "1")
    del args[args.index("--warmup"):args.index("--warmup") + 2]
    assert main(args) == 0  # warm-up and tau at their defaults (10, 3.0)
    assert main([*args, "--warmup", "10", "--tau", "3.0", "--resume"]) == 0


def test_resume_refuses_a_changed_schedule_unless_allowed(root, tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(tiny(root, "--out", out, "--epochs", "1")) == 0
    err = one_line_error(tiny(root, "--out", out, "--epochs", "2", "--resume"), capsys)
    assert "epochs" in err and "--allow-schedule-change" in err
    assert main(tiny(root, "--out", out, "--epochs", "2", "--resume", "--allow-schedule-change")) == 0
    assert [r["epoch"] for r in read_jsonl(f"{out}/metrics.jsonl")] == [0, 1]


# ------------------------------------------------------------------ data


def test_missing_data_never_installs_packages(tmp_path, monkeypatch):
    from spmi.data import sources
    calls = []
    monkeypatch.setattr(sources, "_may_apt", lambda: True)
    monkeypatch.setattr(sources.subprocess, "run", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(sources, "default_root", lambda name: tmp_path)
    with pytest.raises(DataError) as info:
        load_dataset("fmnist")
    assert calls == []
    assert "make data" in str(info.value) and "python -m spmi.data.fetch fmnist" in str(info.value)


def test_a_record_cut_short_by_a_kill_is_dropped_on_resume(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 0}\n{"epoch": 1}\n{"epo')
    JsonlWriter(path, start_epoch=2)
    assert [r["epoch"] for r in read_jsonl(path)] == [0, 1]
    assert path.read_text() == '{"epoch": 0}\n{"epoch": 1}\n'


def test_a_read_only_run_folder_is_one_line(root, readonly_dir, capsys):
    assert "cannot write" in one_line_error(tiny(root, "--out", str(readonly_dir / "run")), capsys)
    assert "cannot write" in one_line_error(tiny(root, "--out", str(readonly_dir)), capsys)
