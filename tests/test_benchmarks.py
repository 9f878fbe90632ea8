"""The benchmarks run: ``epoch_time.py --json`` prints the tracked figures,
``augment_time.py`` a line per dataset, and ``device_check.sh --cpu`` (the GPU check's
smoke mode) prints its whole table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import datagen
from benchmarks import augment_time, epoch_time

REPO = Path(__file__).resolve().parent.parent
TINY = ["--no-verify-data", "--labelled", "20", "--val-size", "20", "--unlabelled-size", "48", "--batch-size", "8",
        "--eval-batch-size", "32", "--steps", "2", "--repeats", "1", "--peak-size", "128", "--device", "cpu"]


def test_epoch_time_json_has_the_tracked_figures(tmp_path, capsys):
    datagen.write_idx_fmnist(tmp_path, 200, 40)
    epoch_time.main(["--data-root", str(tmp_path), *TINY, "--compare", "--profile", "--json"])
    r = json.loads(capsys.readouterr().out)
    assert r["threads"] == torch.get_num_threads()
    assert r["steps_per_epoch"] == 6 and r["unlabelled"] == 48  # ceil(48 / 8)
    for key in ("epoch_seconds_warmup", "epoch_seconds_spmi", "fwd_bwd_peak_fraction", "peak_gflops",
                "eval_seconds_val_test", "eval_seconds_val_only"):
        assert r[key] > 0, key
    for key in ("pass_share", "augment_share", "fwd_bwd_share"):
        assert 0 < r[key] < 1, key
    assert r["pass_share"] + r["augment_share"] + r["fwd_bwd_share"] == pytest.approx(1.0)
    assert set(r["speedup"]) >= {"pass", "spmi_fwd_bwd", "epoch_spmi"} and 0 < r["before"]["pass_share"] < 1
    assert sum(r["profile_shares"].values()) == pytest.approx(1.0) and r["profile_shares"]["conv_linear"] > 0
    assert r["fwd_bwd_peak_fraction_bound"] > 0


def test_augment_time_prints_weak_and_strong_per_dataset(capsys):
    augment_time.main(["--batch", "4", "--reps", "1", "--device", "cpu"])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[2] for line in lines] == ["fmnist", "cifar10", "svhn"]
    for line in lines:
        words = line.split()
        assert words[0] == "cpu" and words[3] == "B=4", line
        assert float(words[words.index("weak") + 1]) > 0 and float(words[words.index("strong") + 1]) > 0, line


@pytest.mark.slow
def test_device_check_cpu_smoke_prints_the_table(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable}
    out = tmp_path / "rows.json"
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "device_check.sh"), "--cpu", "--json-out", str(out)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| check | setting | warm-up epoch s | SPMI epoch s | pass share")
    settings = [line.split("|")[2].strip() for line in lines[1:]]
    assert settings[:4] == ["fmnist/lenet fp32", "fmnist/lenet bf16", "cifar10/wrn_28_2 fp32", "cifar10/wrn_28_2 bf16"]
    assert settings[4].endswith("2 done")
    rows = json.loads(out.read_text())
    assert all(r["SPMI epoch s"] > 0 and 0 < r["pass share"] < 1 for r in rows[:4])
    assert rows[4]["exit"] == 0 and rows[4]["trial_epoch_seconds"] > 0


def test_search_breakdown_splits_a_search_wall_time(tmp_path):
    """Each trial's first epoch carries its start-up, later epochs their Ray/MLflow share
    (a trial's test of its best weights counts as trainer time); the search rows come from
    search.json's creation time and ``--end``."""
    from benchmarks import search_breakdown
    exp = tmp_path / "s"
    exp.mkdir()
    (exp / "search.json").write_text(json.dumps({"name": "s", "created": "2026-01-01 00:00:00"}))
    created = search_breakdown.time.mktime((2026, 1, 1, 0, 0, 0, 0, 0, -1))

    def row(ts: float, it: float, secs: float, best_test: float | None = None) -> str:
        return json.dumps({"timestamp": ts, "time_this_iter_s": it, "seconds": secs, "time/train": secs - 1,
                           "time/eval": 1.0, "time/label_channel": 0.0,
                           **({} if best_test is None else {"time/best_test": best_test})})
    for name, start, best_test in (("trial_a", 10.0, None), ("trial_b", 30.0, 0.5)):
        (exp / name).mkdir()
        (exp / name / "result.json").write_text("\n".join(
            [row(created + start + 6, 6.0, 4.0), row(created + start + 11, 5.0 + (best_test or 0), 4.5, best_test)])
            + "\n")
    b = search_breakdown.breakdown(exp, end=created + 50)
    assert b["trials"] == 2 and b["epochs"] == 4 and b["wall_seconds"] == pytest.approx(50)
    assert b["before_first_trial_seconds"] == pytest.approx(10) and b["after_last_result_seconds"] == pytest.approx(9)
    assert b["trial_startup_seconds"] == pytest.approx(4.0) and b["per_epoch_overhead_seconds"] == pytest.approx(1.0)
    assert b["trainer_seconds"] == pytest.approx(17.5) and b["eval_seconds"] == pytest.approx(4.0)
    assert b["best_test_seconds"] == pytest.approx(0.5)
    assert b["ray_mlflow_share_of_trial_time"] == pytest.approx(5.0 / 22.5)
