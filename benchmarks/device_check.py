"""The prepared device check behind ``benchmarks/device_check.sh``: one table of epoch
times (Fashion-MNIST/LeNet and CIFAR-10/WRN-28-2 on generated data of the real on-disk
formats; fp32 and bf16), the matrix-product peak, the label-channel pass share, and a
4-trial quick search with 0.25 GPU per trial next to the same search with 1 trial per GPU.

``--cpu`` is the smoke mode: tiny sizes on the CPU, one 2-trial search without GPUs.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import epoch_time, synthdata  # noqa: E402
from spmi.tables import markdown_table  # noqa: E402

COLUMNS = ("check", "setting", "warm-up epoch s", "SPMI epoch s", "pass share", "fwd/bwd of peak",
           "peak GFLOP/s", "wall s")

# per mode: data sizes written, and the benchmark's run sizes per dataset
SIZES: dict[str, dict[str, Any]] = {
    "gpu": {"fmnist": (60000, 10000), "cifar10": (10000, 10000), "steps": 20, "repeats": 2, "peak_size": 8192,
            "run": {"labelled": 4000, "val_size": 5000, "unlabelled_size": None, "batch_size": 256,
                    "eval_batch_size": 1024}},
    "cpu": {"fmnist": (300, 60), "cifar10": (60, 40), "steps": 1, "repeats": 1, "peak_size": 128,
            "run": {"labelled": 20, "val_size": 20, "unlabelled_size": 32, "batch_size": 8, "eval_batch_size": 64}},
}


def epoch_row(dataset: str, root: Path, precision: str, device: str, mode: dict[str, Any]) -> dict[str, Any]:
    run = mode["run"]
    argv = ["--dataset", dataset, "--data-root", str(root), "--no-verify-data", "--device", device,
            "--precision", precision, "--steps", str(mode["steps"]), "--repeats", str(mode["repeats"]),
            "--peak-size", str(mode["peak_size"]), "--labelled", str(run["labelled"]),
            "--val-size", str(run["val_size"]), "--batch-size", str(run["batch_size"]),
            "--eval-batch-size", str(run["eval_batch_size"])]
    if run["unlabelled_size"]:
        argv += ["--unlabelled-size", str(run["unlabelled_size"])]
    r = epoch_time.run(epoch_time.build_parser().parse_args(argv))
    return {"check": "epoch", "setting": f"{dataset}/{r['model']} {precision}",
            "warm-up epoch s": r["epoch_seconds_warmup"], "SPMI epoch s": r["epoch_seconds_spmi"],
            "pass share": r["pass_share"], "fwd/bwd of peak": r["fwd_bwd_peak_fraction"],
            "peak GFLOP/s": r["peak_gflops"], "detail": r}


def search_row(label: str, root: Path, storage: Path, gpus: float, cpus: int, concurrent: int | None,
               trials: int, epochs: int, cpu: bool, timeout: float) -> dict[str, Any]:
    """One quick search, timed from the command's start to its exit."""
    cmd = [sys.executable, str(REPO / "tuning" / "search.py"), "--dataset", "fmnist", "--preset", "quick",
           "--data-root", str(root), "--no-verify-data", "--num-samples", str(trials), "--max-epochs", str(epochs),
           "--gpus-per-trial", f"{gpus:g}", "--cpus-per-trial", str(cpus), "--storage-path", str(storage),
           "--name", label]
    if concurrent:
        cmd += ["--max-concurrent", str(concurrent)]
    if cpu:  # tiny splits for the smoke mode
        cmd += ["--labelled", "20", "--val-size", "20", "--unlabelled-size", "40", "--set", "batch_size=8",
                "--set", "eval_batch_size=64"]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=storage, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
        code: int | str = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray processes it started
        output, code = proc.communicate()[0] or "", f"timeout after {timeout:.0f} s"
    wall = time.perf_counter() - t
    done, epoch_s = _trial_seconds(storage / label)
    setting = f"{trials} trials x {epochs} epochs, {gpus:g} GPU + {cpus} CPU each, {done} done"
    row = {"check": f"search {label}", "setting": setting, "wall s": wall, "exit": code,
           "trials_done": done, "trial_epoch_seconds": epoch_s}
    if code != 0:
        row["output_tail"] = output[-3000:]
    return row


def _trial_seconds(experiment: Path) -> tuple[int, float]:
    """Trials with a result and the sum of their epochs' ``seconds``."""
    done, total = 0, 0.0
    for result in experiment.glob("trial_*/result.json"):
        lines = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        if lines:
            done += 1
            total += sum(float(r.get("seconds", 0.0)) for r in lines)
    return done, total


def fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def table(rows: list[dict[str, Any]]) -> str:
    def cell(column: str, v: Any) -> str:
        if v is not None and column == "pass share":
            return f"{v:.1%}"
        if v is not None and column == "fwd/bwd of peak":
            return f"{v:.2f}"
        return fmt(v)
    return markdown_table(COLUMNS, ([cell(c, r.get(c)) for c in COLUMNS] for r in rows))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cpu", action="store_true", help="smoke mode: tiny sizes on the CPU")
    p.add_argument("--workdir", help="folder for the generated data and searches (default: a temporary one)")
    p.add_argument("--json-out", help="also write every row (with the benchmark details) to this JSON file")
    p.add_argument("--skip-search", action="store_true")
    args = p.parse_args(argv)

    import torch
    if not args.cpu and not torch.cuda.is_available():
        print("error: no CUDA GPU here; run with --cpu for the CPU smoke mode", file=sys.stderr)
        return 2
    mode = SIZES["cpu" if args.cpu else "gpu"]
    device = "cpu" if args.cpu else "cuda"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        roots = {"fmnist": synthdata.write_fmnist(work / "fmnist", *mode["fmnist"]),
                 "cifar10": synthdata.write_cifar10(work / "cifar10", *mode["cifar10"])}
        rows: list[dict[str, Any]] = []
        for dataset in ("fmnist", "cifar10"):
            for precision in ("fp32", "bf16"):
                rows.append(epoch_row(dataset, roots[dataset], precision, device, mode))
                print(f"done: {rows[-1]['setting']}", file=sys.stderr, flush=True)
        if not args.skip_search:
            storage = work / "searches"
            storage.mkdir(exist_ok=True)
            if args.cpu:
                rows.append(search_row("cpu", roots["fmnist"], storage, 0, 1, 2, 2, 4, True, 600))
            else:
                cpus = max(1, (os.cpu_count() or 4) // 4)
                rows.append(search_row("gpu-quarter", roots["fmnist"], storage, 0.25, cpus, 4, 4, 4, False, 150))
                rows.append(search_row("gpu-whole", roots["fmnist"], storage, 1, cpus, None, 4, 4, False, 150))
    print(table(rows))
    for r in rows:
        if r.get("exit"):
            print(f"\n{r['check']} failed (exit {r['exit']}):\n{r.get('output_tail', '')}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(rows, indent=1, default=str))
    return 1 if any(r.get("exit") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
