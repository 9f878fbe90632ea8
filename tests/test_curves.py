"""The learning-curve table builder (benchmarks/curves.py) on tiny generated Fashion-MNIST:
a 2 x 2 grid, 2 seeds, 3 epochs, and a third seed for the top 2. The table is built the way
a long build runs: a first session stops after 3 runs, a second resumes with ``--commit``.
Rows and schema, resumption without duplicates, the third-seed rule, determinism, the work
columns against the images that really reach the network, a diverged run, errors."""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from benchmarks import curves
from benchmarks.curve_run import COLUMNS, RunTask, epoch_work, train_rows
from benchmarks.curve_store import TABLE_META_KEY, TableFolder, TableSpec
from datagen import write_idx_fmnist
from spmi.config import resolve
from spmi.data import load_dataset
from spmi.trainer import Trainer

REPO = Path(__file__).resolve().parent.parent
GRID = {"lr": [0.01, 0.05], "warmup": [0, 1]}
EPOCHS, SEEDS, TOP, N_U, BATCH = 3, 2, 2, 80, 16
TIMES = ("seconds", "time/label_channel", "time/train", "time/eval", "cpu_seconds")


def table_args(data_root: str, root: str, *extra: str) -> list[str]:
    return ["--root", root, "--name", "tiny", "--data-root", data_root, "--no-verify-data", "--labelled", "20",
            "--epochs", str(EPOCHS), "--lr", "0.01", "0.05", "--warmup", "0", "1", "--tau", "3", "--tau-u", "2",
            "--seeds", str(SEEDS), "--top", str(TOP), "--top-seeds", "3", "--set", "val_size=30",
            "--set", f"batch_size={BATCH}", "--set", "eval_batch_size=64", "--test-table", *extra]


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """Tiny generated Fashion-MNIST files (300 training, 40 test images)."""
    root = tmp_path_factory.mktemp("fmnist")
    write_idx_fmnist(root, n_train=300, n_test=40)
    return root


@pytest.fixture(scope="module")
def built(tmp_path_factory, data_root):
    """The tiny table: 3 runs in a first session, the rest in a resumed one that commits."""
    base = tmp_path_factory.mktemp("curves")
    repo = base / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    git(repo, "config", "user.email", "t@example.com")
    git(repo, "config", "user.name", "t")
    root = repo / "tables"
    args = table_args(str(data_root), str(root))
    assert curves.main([*args, "--jobs", "2", "--max-runs", "3"]) == 0
    folder = TableFolder(root, "tiny")
    first = {name: (folder.parts / name).read_bytes() for name in folder.done()}
    status = curves.status(folder, folder.spec())
    assert curves.main([*args, "--jobs", "2", "--commit"]) == 0
    assert curves.main([*args, "--assemble"]) == 0
    return {"folder": folder, "first": first, "status": status, "repo": repo, "args": args,
            "data_root": str(data_root)}


def test_rows_are_configs_x_seeds_x_epochs_with_the_schema(built):
    folder: TableFolder = built["folder"]
    table = pq.read_table(folder.table_file)
    df = table.to_pandas()
    runs = 2 * 2 * SEEDS + TOP * 1
    assert len(df) == runs * EPOCHS
    assert list(df.columns) == ["lr", "warmup", "tau", "tau_u", *(name for name, _, _ in COLUMNS)]
    assert not df.duplicated(["lr", "warmup", "tau", "tau_u", "seed", "epoch"]).any()
    order = df[["lr", "warmup", "seed", "epoch"]].drop_duplicates()
    assert order.equals(order.sort_values(["lr", "warmup", "seed", "epoch"]))  # grid order, then seed, then epoch
    assert sorted(df["epoch"].unique()) == [1, 2, 3] and set(df["seed"]) == {0, 1, 2}
    assert (df["labelled"] == 20).all() and (df["unlabelled_size"] == N_U).all() and not df["diverged"].any()
    for name in ("val/acc", "val/covering_rate", "val/approx_acc", "test/acc"):
        assert df[name].between(0, 1).all(), name
    assert (df["val/approx_acc"] <= df["val/covering_rate"] + 1e-12).all()
    started = df["epoch"] > df["warmup"]  # 1-based epoch e runs the label channel when e - 1 >= T_w
    assert df.loc[started, "cand/unl_size"].notna().all() and df.loc[~started, "cand/unl_size"].isna().all()
    steps = math.ceil(N_U / BATCH)
    assert (df["work/train_images"] == steps * BATCH * (1 + started)).all()
    assert (df["work/pass_images"] == started * (20 + N_U)).all()
    assert (df["work/val_images"] == 30).all() and (df["work/test_images"] == 40).all()
    assert (df["seconds"] > 0).all() and (df["cpu_seconds"] > 0).all()

    side = json.loads(folder.sidecar.read_text())
    assert side["test_table"] is True and side["complete"] is True and side["rows"] == len(df)
    assert side["sha256"] == hashlib.sha256(folder.table_file.read_bytes()).hexdigest()
    assert side["spec"]["grid"]["lr"] == GRID["lr"] and len(side["sessions"]) == 2
    session = side["sessions"][0]
    assert session["command"] and session["cpu_model"] and session["torch"] == torch.__version__
    assert "cpu_flags" in session and session["started"] and session["runs"] == 3
    assert side["cpu_hours"] > 0 and set(side["columns"]) == set(df.columns)
    assert side["resolved_config"]["options"]["score"] == "official"  # the authors' code value, recorded
    assert json.loads(table.schema.metadata[TABLE_META_KEY])["test_table"] is True


def test_a_resumed_build_keeps_finished_runs_and_adds_no_duplicates(built):
    folder: TableFolder = built["folder"]
    first = built["first"]
    assert len(first) == 3 and built["status"]["runs_done"] == 3 and built["status"]["runs_total"] == 10
    assert built["status"]["cpu_hours_left"] > 0 and not built["status"]["extra_chosen"]
    for name, raw in first.items():  # the resumed session rewrote none of them
        assert (folder.parts / name).read_bytes() == raw, name
    assert len(folder.done()) == 10
    s = curves.status(folder, folder.spec())
    assert s["runs_done"] == s["runs_total"] == 10 and s["cpu_hours_left"] == 0
    # --commit: every part and build.json are committed, nothing left over
    repo = built["repo"]
    tracked = set(git(repo, "ls-files", "tables/tiny").split())
    assert {f"tables/tiny/parts/{n}" for n in folder.done()} | {"tables/tiny/build.json"} <= tracked
    assert git(repo, "status", "--porcelain", "--", "tables/tiny/parts", "tables/tiny/build.json") == ""
    assert len(git(repo, "log", "--oneline").splitlines()) >= 8  # the session's start, then one per run


def test_the_third_seed_goes_to_the_top_configurations_by_mean_validation_score(built):
    df = pq.read_table(built["folder"].table_file).to_pandas()
    keys = ["lr", "warmup"]
    last = df[(df["epoch"] == EPOCHS) & (df["seed"] < SEEDS)]
    means = last.groupby(keys)["val/acc"].mean()
    chosen = set(map(tuple, df[df["seed"] == 2][keys].drop_duplicates().itertuples(index=False)))
    assert len(chosen) == TOP
    others = [m for k, m in means.items() if k not in chosen]
    assert min(means[k] for k in chosen) >= max(others)


def test_a_run_is_fixed_by_its_seed(built):
    """The same (configuration, seed) trained again, in this process, gives the part's rows
    except the measured times."""
    folder: TableFolder = built["folder"]
    spec = folder.spec()
    config = spec.configs()[3]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rows, _ = train_rows(RunTask(spec.base, config, 1, "", built["data_root"], False))
    finally:
        torch.set_num_threads(threads)
    again = pd.DataFrame(rows).drop(columns=list(TIMES))
    saved = pd.read_parquet(folder.part(config, 1)).drop(columns=list(TIMES))
    pd.testing.assert_frame_equal(again[saved.columns], saved, check_exact=True)


def test_work_counts_the_images_that_reach_the_network(built):
    """``epoch_work`` against forward-hook counts on the network and its folded inference copies."""
    data = load_dataset("fmnist", built["data_root"], verify=False)
    cfg = resolve({**TableFolder.spec(built["folder"]).base, "lr": 0.01, "warmup": 1, "tau": 3.0, "tau_u": 2.0,
                   "seed": 0})
    counts = {"train": 0, "inference": 0}
    seen = []
    trainer = Trainer(cfg, data, callbacks=[lambda m, t: seen.append(dict(counts))])

    def count(module, inputs):
        if module is trainer.model:
            counts["train" if torch.is_grad_enabled() and module.training else "inference"] += len(inputs[0])
        elif isinstance(module, torch.fx.GraphModule):  # a BatchNorm-folded copy (label channel, evaluation)
            counts["inference"] += len(inputs[0])

    handle = torch.nn.modules.module.register_module_forward_pre_hook(count)
    try:
        trainer.fit()
    finally:
        handle.remove()
    previous = {"train": 0, "inference": 0}
    for epoch, now in enumerate(seen):
        work = epoch_work(trainer, epoch)
        assert now["train"] - previous["train"] == work["work/train_images"], epoch
        inference = work["work/pass_images"] + work["work/val_images"] + work["work/test_images"]
        assert now["inference"] - previous["inference"] == inference, epoch
        previous = now


def test_a_diverged_run_ends_with_one_diverged_row(built):
    spec: TableSpec = built["folder"].spec()
    config = {"lr": 1e30, "warmup": 1, "tau": 3.0, "tau_u": 2.0}
    rows, result = train_rows(RunTask(spec.base, config, 0, "", built["data_root"], False))
    assert result.diverged and len(rows) == 1
    row = rows[0]
    assert row["diverged"] and row["epoch"] == 1 and not math.isfinite(row["loss/total"])
    assert math.isnan(row["val/acc"]) and math.isnan(row["test/acc"]) and row["seconds"] > 0
    assert row["work/test_images"] == 0 and 0 < row["work/train_images"] <= 5 * BATCH


def test_measure_projects_the_tables_cpu_hours(built, tmp_path, capsys):
    args = table_args(built["data_root"], str(tmp_path))
    threads = torch.get_num_threads()
    assert curves.main([*args, "--measure", "--json"]) == 0
    assert torch.get_num_threads() == threads  # the caller's threads come back
    m = json.loads(capsys.readouterr().out)
    assert m["threads"] == 1 and m["warmup_epoch_cpu_seconds"] > 0 and m["spmi_epoch_cpu_seconds"] > 0
    assert m["runs"] == 10 and m["run_cpu_seconds_rusage"] > 0 and len(m["load_average_before"]) == 3
    # warmup 0 and 1: runs of 3 or 2 label-channel epochs; top runs priced as the grid's mean run
    w, s = m["warmup_epoch_cpu_seconds"], m["spmi_epoch_cpu_seconds"]
    per_config = [3 * s, 3 * s, w + 2 * s, w + 2 * s]
    expected = (SEEDS * sum(per_config) + TOP * sum(per_config) / 4) / 3600
    assert m["projected_cpu_hours"] == pytest.approx(expected)
    assert curves.main([*args, "--status", "--json"]) == 2  # no build yet: measured, not started
    assert "no table build" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--warmup", "2"], "at most a third of the run"),
    (["--set", "lr=0.1"], "the builder sets lr itself"),
    (["--set", "momentum=1.5"], "momentum=1.5 must be < 1.0"),
    (["--lr", "0.01", "0.01"], "lists a value twice"),
    (["--unlabelled", "four"], "--unlabelled 'four'"),
])
def test_bad_settings_are_one_line_errors(built, tmp_path, capsys, extra, message):
    assert curves.main([*table_args(built["data_root"], str(tmp_path)), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "tiny" / "parts").exists()


def test_a_table_resumes_only_with_its_own_settings(built, capsys):
    args = [*built["args"], "--set", "weight_decay=0.002"]
    assert curves.main(args) == 2
    err = capsys.readouterr().err
    assert "holds a table built with other settings" in err and "weight_decay" in err


@pytest.mark.slow
def test_a_build_stopped_by_sigterm_resumes(data_root, tmp_path):
    """A build in its own process, stopped by SIGTERM once a part exists, then resumed:
    every run once, and the parts written before the stop unchanged."""
    args = table_args(str(data_root), str(tmp_path))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, str(REPO / "benchmarks" / "curves.py"), *args, "--jobs", "1"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    parts = tmp_path / "tiny" / "parts"
    deadline = time.monotonic() + 300
    while not (parts.is_dir() and any(p.suffix == ".parquet" for p in parts.iterdir())):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "resume with the same command" in err
    kept = {p.name: p.read_bytes() for p in parts.iterdir() if p.suffix == ".parquet"}
    assert 1 <= len(kept) < 10
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len([p for p in parts.iterdir() if p.suffix == ".parquet"]) == 10
    for name, raw in kept.items():
        assert (parts / name).read_bytes() == raw
