"""Build a learning-curve table of SPMI: one row per (configuration, seed, epoch), trained
by the project's own trainer, for searches replayed in simulated time.

The default table is the search-evidence issue's: Fashion-MNIST, p = 0.3, l = 1000, an
unlabelled pool of 4 x l, 60 epochs (the cosine schedule over the table's length), the
full factorial of lr x T_w x tau x tau_u below, every other setting at the authors' code
value; seeds 0 and 1 for every configuration, and seed 2 for the 10 best by mean final
``val/acc`` once every configuration has its two seeds (the builder decides from its rows).
The validation images carry candidate sets (``val_labels=partial``) so that ``val/acc`` (the
oracle), ``val/covering_rate`` and ``val/approx_acc`` are measured on the same images.

    python benchmarks/curves.py --measure              # cost: 2 epochs, 1 thread, projected CPU hours
    python benchmarks/curves.py [--jobs N] [--commit] [--max-hours H] [--max-runs N]   # build / resume
    python benchmarks/curves.py --status | --list      # done / total, CPU hours so far and left
    python benchmarks/curves.py --assemble             # benchmarks/data/NAME.parquet + NAME.json (SHA-256)
    python benchmarks/curves.py --labelled 4000        # l = 4000, pool 16000: another table
    python benchmarks/curves.py --device cuda --unlabelled all   # full size on a GPU

Each finished run is written atomically as its own part (``curve_store``); a killed build
resumes with the same command and skips them, restarting only the runs that were cut off.
At most one run per worker process, one thread each (``--jobs``, default: the cores).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import ctypes
import fcntl
import json
import multiprocessing as mp
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks import curve_store as store  # noqa: E402
from benchmarks.curve_run import RunResult, RunTask, run_part, train_rows  # noqa: E402
from benchmarks.curve_store import TableFolder, TableSpec  # noqa: E402
from spmi.cli_options import OneLineParser  # noqa: E402
from spmi.config import resolve  # noqa: E402
from spmi.data import DataError, check_split_args, load_dataset  # noqa: E402
from spmi.device import resolve_device  # noqa: E402

DEFAULT_ROOT = Path(__file__).resolve().parent / "data"
GRID_DEFAULTS: dict[str, list[Any]] = {
    "lr": [0.003, 0.01, 0.03, 0.05, 0.1],   # the paper's {0.01, 0.03, 0.05} and both sides of them
    "warmup": [5, 10, 20],                  # T_w: the paper's grid
    "tau": [1.5, 3.0],                      # the paper's 3 and half of it (condensation fires earlier)
    "tau_u": [1.0, 2.0],                    # the paper's 2 and half of it
}
GRID_TYPES = {"lr": float, "warmup": int, "tau": float, "tau_u": float}
# settings the builder owns: --set may not change them
OWNED = frozenset({*GRID_DEFAULTS, "seed", "out", "progress", "data_root", "verify_data", "download", "method",
                   "eval_test", "eval_every", "checkpoint_every"})
PR_SET_PDEATHSIG = 1


class Stop(Exception):
    """SIGTERM: stop the build now (the runs in flight restart next time)."""


# ---------------------------------------------------------------- the spec


def parse_sets(items: list[str]) -> dict[str, Any]:
    """``--set NAME=VALUE`` pairs (VALUE read as YAML) for the settings every run shares."""
    out: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"--set {item!r} is not NAME=VALUE, e.g. --set val_size=2000")
        if name in OWNED:
            raise ValueError(f"--set {name}: the builder sets {name} itself "
                             f"(the grid has its own flags: --lr --warmup --tau --tau-u; data: --data-root)")
        out[name] = yaml.safe_load(value)
    return out


def unlabelled_size(text: str, labelled: int) -> int | None:
    """``--unlabelled``: ``Kx`` (K times l), a number of images, or ``all`` (None)."""
    try:
        if text == "all":
            return None
        if text.endswith("x"):
            return round(float(text[:-1]) * labelled)
        return int(text)
    except ValueError:
        raise ValueError(f"--unlabelled {text!r}: give Kx (K times l, e.g. 4x), a number of images, or all") from None


def default_name(args: argparse.Namespace, n_unlabelled: int | None, device: str) -> str:
    pool = "all" if n_unlabelled is None else str(n_unlabelled)
    suffix = "" if device == "cpu" else f"-{device.replace(':', '')}"
    return f"spmi-{args.dataset}-p{args.partial_rate:g}-l{args.labelled}-u{pool}-e{args.epochs}{suffix}"


def grid_of(args: argparse.Namespace) -> dict[str, list[Any]]:
    grid = {}
    for name, cast in GRID_TYPES.items():
        values = [cast(v) for v in getattr(args, name)]
        if len(set(values)) != len(values):
            raise ValueError(f"--{name.replace('_', '-')} lists a value twice: {values}")
        grid[name] = values
    return grid


def spec_of(args: argparse.Namespace, data_checksum: str | None) -> tuple[TableSpec, str]:
    """The table's spec from the flags, every configuration checked by ``resolve``; and the
    resolved device type. ValueError (one line) for bad settings."""
    if args.seeds < 1 or args.top < 0 or args.top_seeds < args.seeds:
        raise ValueError(f"--seeds {args.seeds} must be >= 1, --top {args.top} >= 0 and "
                         f"--top-seeds {args.top_seeds} >= --seeds")
    device = resolve_device(args.device).type if args.device == "auto" else args.device
    resolve_device(device)
    n_u = unlabelled_size(args.unlabelled, args.labelled)
    base = {"dataset": args.dataset, "method": "spmi", "labelled": args.labelled, "partial_rate": args.partial_rate,
            "unlabelled_size": n_u, "epochs": args.epochs, "val_labels": "partial", "eval_test": "every",
            "eval_every": 1, "device": device, **parse_sets(args.set)}
    grid = grid_of(args)
    for name in base:
        if name in grid:
            raise ValueError(f"{name} is both varied and fixed")
    too_long = max(grid["warmup"])
    if 3 * too_long > args.epochs:
        raise ValueError(f"--epochs {args.epochs} is too short for T_w {too_long}: the largest warm-up may be at "
                         f"most a third of the run; give --epochs {3 * too_long} or smaller --warmup values")
    spec = TableSpec(name=args.name or default_name(args, n_u, device), grid=grid, base=base,
                     seeds=list(range(args.seeds)), top=args.top, top_seeds=list(range(args.seeds, args.top_seeds)),
                     top_metric=args.top_metric, data_checksum=data_checksum or "", test_table=args.test_table)
    for config in spec.configs():
        resolve({**base, **config, "seed": 0})
    return spec, device


def resolved_record(spec: TableSpec) -> dict[str, Any]:
    """Every setting of the table's runs as resolved (the grid's and the seed left out)."""
    cfg = resolve({**spec.base, **spec.configs()[0], "seed": 0}).to_dict()
    for name in ("seed", "out", "data_root", "progress", "verify_data", "download"):
        cfg.pop(name, None)
    options = {k: v for k, v in cfg.pop("options").items() if k not in spec.grid}
    return {**{k: v for k, v in cfg.items() if k not in spec.grid}, "options": options}


# ---------------------------------------------------------------- workers


def init_worker(parent: int) -> None:
    """A worker: one thread, and it dies with the builder (Linux PR_SET_PDEATHSIG)."""
    torch.set_num_threads(1)
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the builder died before the line above
        os._exit(1)


@contextlib.contextmanager
def worker_pool(jobs: int) -> Iterator[cf.ProcessPoolExecutor]:
    """``jobs`` spawned worker processes (one thread each); on leaving, the ones still
    running (a stop, an error) are terminated: their runs restart next time."""
    env = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    before = {p.pid for p in mp.active_children()}
    pool = cf.ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn"), initializer=init_worker,
                                  initargs=(os.getpid(),))
    try:
        yield pool
    finally:
        for proc in mp.active_children():
            if proc.pid not in before:
                proc.terminate()
        pool.shutdown(wait=True, cancel_futures=True)
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def table_lock(folder: TableFolder) -> Iterator[None]:
    """One build of a table at a time (an advisory lock, released when the builder dies)."""
    folder.dir.mkdir(parents=True, exist_ok=True)
    with open(folder.dir / ".lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"another build of table {folder.name} is running (lock {folder.dir / '.lock'}); "
                             f"wait for it or stop it") from None
        yield


@contextlib.contextmanager
def sigterm_stops() -> Iterator[None]:
    """Within: SIGTERM raises ``Stop`` in the main thread (the previous handler comes back)."""
    def stop(signum: int, frame: Any) -> None:
        raise Stop()

    old = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


# ---------------------------------------------------------------- build


class Session:
    """This build session's entry in ``build.json``, kept up to date after each run."""

    def __init__(self, folder: TableFolder, spec: TableSpec, device: str):
        self.folder = folder
        build = folder.read_build()
        if build is None:
            build = {"spec": spec.to_dict(), "resolved_config": resolved_record(spec), "sessions": []}
        else:
            store.check_same_spec(TableSpec.from_dict(build["spec"]), spec, folder.dir)
        self.entry = store.session_entry(device)
        build["sessions"].append(self.entry)
        self.build = build
        self.save()

    def save(self) -> None:
        self.build["cpu_hours"] = round(store.cpu_hours(self.folder), 4)
        self.build["updated"] = store.now()
        self.folder.write_build(self.build)

    def finished(self, result: RunResult) -> None:
        self.entry["runs"] += 1
        self.entry["cpu_hours"] = round(self.entry["cpu_hours"] + result.cpu_seconds / 3600, 4)
        self.entry["ended"] = store.now()
        self.save()


def commit(folder: TableFolder, paths: list[Path], message: str) -> None:
    try:
        store.commit_paths(paths, message)
    except (OSError, subprocess.CalledProcessError) as err:
        detail = getattr(err, "stderr", "") or str(err)
        raise ValueError(f"--commit: git failed ({detail.strip().splitlines()[-1] if detail.strip() else err}); "
                         f"the finished parts stay in {folder.parts}: fix git and resume") from None


def build(args: argparse.Namespace, folder: TableFolder, spec: TableSpec, device: str) -> int:
    """Run the table's missing runs (module doc); 0 when the build ended as asked."""
    jobs = args.jobs or (1 if device.startswith("cuda") else len(os.sched_getaffinity(0)))
    provenance = {"commit": store.git_state(Path(__file__).resolve().parent.parent)["commit"],
                  "torch": torch.__version__, "device": device}
    with table_lock(folder):
        removed = folder.clean_temporary()
        session = Session(folder, spec, device)
        if args.commit:
            commit(folder, [folder.build_file, folder.dir / store.MEASURE_NAME,
                            *(folder.parts / n for n in sorted(folder.done()))],
                   f"curves {spec.name}: build session started ({len(folder.done())} runs so far)")
        t0, started, walls, reason = time.perf_counter(), 0, [], "the table is complete"
        running: dict[cf.Future, str] = {}
        print(f"table {spec.name}: {len(folder.done())} runs done; {jobs} worker(s), 1 thread each"
              + (f"; removed {removed} cut-off part write(s)" if removed else ""), flush=True)
        with sigterm_stops(), worker_pool(jobs) as pool:
            while True:
                p = store.plan(folder, spec)
                done = folder.done()
                todo = [(c, s) for c, s in p.runs() if folder.part(c, s).name not in done
                        and str(folder.part(c, s)) not in running.values()]
                while todo and len(running) < jobs:
                    if args.max_runs is not None and started >= args.max_runs:
                        reason = f"--max-runs {args.max_runs} reached"
                        break
                    expected = sum(walls) / len(walls) if walls else 0.0
                    if args.max_hours is not None and time.perf_counter() - t0 + expected > args.max_hours * 3600:
                        reason = f"--max-hours {args.max_hours} reached"
                        break
                    config, seed = todo.pop(0)
                    task = RunTask(spec.base, config, seed, str(folder.part(config, seed)), args.data_root,
                                   not args.no_verify_data, provenance)
                    running[pool.submit(run_part, task)] = task.part
                    started += 1
                if not running:
                    if todo and reason == "the table is complete":
                        reason = "stopped"
                    break
                finished, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                for future in finished:
                    running.pop(future)
                    result = future.result()
                    walls.append(result.wall_seconds)
                    session.finished(result)
                    n_done = len(folder.done())
                    total = store.plan(folder, spec).total
                    note = " (diverged)" if result.diverged else ""
                    print(f"{Path(result.part).name}: {result.rows} rows{note}, {result.wall_seconds:.0f} s, "
                          f"{result.cpu_seconds:.0f} CPU s; {n_done}/{total} runs", flush=True)
                    if args.commit:
                        commit(folder, [Path(result.part), folder.build_file],
                               f"curves {spec.name}: {n_done}/{total} runs")
    print(f"stopped: {reason}; {started} run(s) this session", flush=True)
    print_status(folder, spec)
    return 0


# ---------------------------------------------------------------- status, measure


def status(folder: TableFolder, spec: TableSpec) -> dict[str, Any]:
    p = store.plan(folder, spec)
    done = folder.done()
    first_done = sum(folder.part(c, s).name in done for c, s in p.first)
    extra_done = sum(folder.part(c, s).name in done for c, s in (p.extra or []))
    costs = store.epoch_costs(folder)
    left_first = [(c, s) for c, s in p.first if folder.part(c, s).name not in done]
    left = None
    if costs is not None:
        if p.extra is None:
            left = store.projected_cpu_hours(spec, costs, left_first)
        else:
            left = store.projected_cpu_hours(spec, costs, [(c, s) for c, s in p.runs()
                                                           if folder.part(c, s).name not in done], extra=0)
    return {"table": spec.name, "folder": str(folder.dir), "test_table": spec.test_table,
            "runs_done": first_done + extra_done, "runs_total": p.total, "first_pass_done": first_done,
            "first_pass_total": len(p.first), "extra_done": extra_done, "extra_total": p.n_extra,
            "extra_chosen": p.extra is not None, "cpu_hours": round(store.cpu_hours(folder), 3),
            "cpu_hours_left": None if left is None else round(left, 3), "epoch_cpu_seconds": costs}


def print_status(folder: TableFolder, spec: TableSpec) -> None:
    s = status(folder, spec)
    extra = (f"top-{spec.top} extra seeds {s['extra_done']}/{s['extra_total']}" if s["extra_chosen"]
             else f"top-{spec.top} extra seeds ({s['extra_total']} runs): chosen after the first pass")
    left = ("unknown (run --measure, or let a run finish)" if s["cpu_hours_left"] is None
            else f"{s['cpu_hours_left']:.2f}")
    print(f"table {spec.name}{' [test table]' if spec.test_table else ''}: {s['runs_done']}/{s['runs_total']} runs "
          f"(first pass {s['first_pass_done']}/{s['first_pass_total']}; {extra}); CPU hours so far "
          f"{s['cpu_hours']:.2f}, estimated left {left}", flush=True)


def measure(args: argparse.Namespace, folder: TableFolder, spec: TableSpec) -> dict[str, Any]:
    """Two epochs of one configuration in this process with one thread (T_w = 1: a warm-up
    epoch, then a label-channel epoch); seconds and CPU seconds per epoch and the table's
    projected CPU hours. Written to the table folder's ``measure.json``."""
    config = {**spec.configs()[len(spec.configs()) // 2], "warmup": 1}
    task = RunTask({**spec.base, "epochs": 2}, config, 0, "", args.data_root, not args.no_verify_data)
    load_before = os.getloadavg()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        used = torch.get_num_threads()
        usage0 = resource.getrusage(resource.RUSAGE_SELF)
        rows, _ = train_rows(task)
        usage1 = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        torch.set_num_threads(threads)
    warm, spmi = rows[0], rows[1]
    costs = {"warmup": warm["cpu_seconds"], "spmi": spmi["cpu_seconds"]}
    runs = len(spec.configs()) * len(spec.seeds) + min(spec.top, len(spec.configs())) * len(spec.top_seeds)
    hours = store.projected_cpu_hours(spec, costs)
    out = {"table": spec.name, "config": config, "threads": used,
           "warmup_epoch_seconds": warm["seconds"], "spmi_epoch_seconds": spmi["seconds"],
           "warmup_epoch_cpu_seconds": warm["cpu_seconds"], "spmi_epoch_cpu_seconds": spmi["cpu_seconds"],
           "spmi_epoch_parts_seconds": {k: spmi[k] for k in ("time/label_channel", "time/train", "time/eval")},
           "run_cpu_seconds_rusage": (usage1.ru_utime + usage1.ru_stime) - (usage0.ru_utime + usage0.ru_stime),
           "load_average_before": load_before, "load_average_after": os.getloadavg(),
           "cores": len(os.sched_getaffinity(0)), "runs": runs, "epochs": int(spec.base["epochs"]),
           "projected_cpu_hours": hours, **store.cpu_info(), "measured": store.now()}
    out.pop("cpu_flags")
    folder.dir.mkdir(parents=True, exist_ok=True)
    (folder.dir / store.MEASURE_NAME).write_text(json.dumps(out, indent=1) + "\n")
    return out


# ---------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python benchmarks/curves.py", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    act = p.add_argument_group("what to do (default: build or resume)").add_mutually_exclusive_group()
    act.add_argument("--status", action="store_true", help="print done/total runs and CPU hours so far and left")
    act.add_argument("--list", action="store_true", help="print each planned run and whether it is done")
    act.add_argument("--assemble", action="store_true", help="write NAME.parquet and its sidecar NAME.json")
    act.add_argument("--measure", action="store_true", help="time 2 epochs of one configuration (1 thread) and "
                     "project the table's CPU hours")
    t = p.add_argument_group("the table")
    t.add_argument("--name", default=None, help="table name (default: from the settings, "
                   "e.g. spmi-fmnist-p0.3-l1000-u4000-e60)")
    t.add_argument("--root", default=str(DEFAULT_ROOT), help="folder of the tables (default: benchmarks/data)")
    t.add_argument("--dataset", default="fmnist")
    t.add_argument("--partial-rate", type=float, default=0.3)
    t.add_argument("--labelled", type=int, default=1000, help="l (default: 1000)")
    t.add_argument("--unlabelled", default="4x", help="unlabelled pool: Kx (K times l), a number, or all "
                   "(default: 4x)")
    t.add_argument("--epochs", type=int, default=60, help="the table's length and the cosine schedule's (default: 60)")
    for name, values in GRID_DEFAULTS.items():
        t.add_argument(f"--{name.replace('_', '-')}", nargs="+", type=GRID_TYPES[name], default=values,
                       metavar="V", help=f"values of {name} (default: {' '.join(map(str, values))})")
    t.add_argument("--seeds", type=int, default=2, help="seeds of every configuration: 0..N-1 (default: 2)")
    t.add_argument("--top", type=int, default=10, help="configurations that get more seeds (default: 10)")
    t.add_argument("--top-seeds", type=int, default=3, help="seeds of those (default: 3)")
    t.add_argument("--top-metric", default="val/acc", choices=("val/acc", "val/covering_rate", "val/approx_acc"),
                   help="the score, last epoch, mean over the seeds, that picks them (default: val/acc)")
    t.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="another setting shared by every run (a TrainConfig field or SPMI option)")
    t.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu)")
    t.add_argument("--test-table", action="store_true", help="mark the table as a test table (its sidecar says so)")
    r = p.add_argument_group("the build")
    r.add_argument("--data-root", default=None, help="folder of the dataset files (default: the dataset's)")
    r.add_argument("--no-verify-data", action="store_true", help="skip the MD5 check of the dataset files")
    r.add_argument("--jobs", type=int, default=0, help="worker processes, one run and one thread each "
                   "(default: the cores; 1 on CUDA)")
    r.add_argument("--commit", action="store_true", help="git-commit each finished part and build.json as they come")
    r.add_argument("--max-hours", type=float, default=None, help="start no run that would end after H hours")
    r.add_argument("--max-runs", type=int, default=None, help="start at most N runs")
    r.add_argument("--allow-incomplete", action="store_true", help="--assemble a table whose runs are not all done")
    r.add_argument("--json", action="store_true", help="--status / --measure: one JSON object")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.jobs < 0 or (args.max_runs is not None and args.max_runs < 0):
            raise ValueError("--jobs and --max-runs must be >= 0")
        reading = args.status or args.list or args.assemble
        if reading:
            device = resolve_device(args.device).type if args.device == "auto" else args.device
            folder = TableFolder(args.root, args.name or default_name(
                args, unlabelled_size(args.unlabelled, args.labelled), device))
            spec = folder.spec()
        else:
            data = load_dataset(args.dataset, args.data_root, verify=not args.no_verify_data)
            spec, device = spec_of(args, data.checksum)
            check_split_args(len(data.train_y), data.info.num_classes, args.labelled, args.partial_rate,
                             int(spec.base.get("val_size", 5000)))
            del data
            folder = TableFolder(args.root, spec.name)
        if args.status:
            s = status(folder, spec)
            print(json.dumps(s)) if args.json else print_status(folder, spec)
        elif args.list:
            p = store.plan(folder, spec)
            done = folder.done()
            for config, seed in p.runs():
                part = folder.part(config, seed)
                flag = "done" if part.name in done else "todo"
                print(f"{flag}  {part.stem}  " + " ".join(f"{k}={v}" for k, v in config.items()) + f" seed={seed}")
            if p.extra is None:
                print(f"todo  top-{spec.top} configurations x seeds {spec.top_seeds}: chosen after the first pass")
        elif args.assemble:
            side = store.assemble(folder, args.allow_incomplete)
            print(f"wrote {folder.table_file} ({side['rows']} rows, {side['runs']} runs, sha256 {side['sha256']}) "
                  f"and {folder.sidecar}")
            if args.commit:
                commit(folder, [folder.table_file, folder.sidecar], f"curves {spec.name}: table assembled")
        elif args.measure:
            m = measure(args, folder, spec)
            if args.json:
                print(json.dumps(m))
            else:
                print(f"{m['cpu_model']}, 1 thread, load average {m['load_average_before'][0]:.1f}: warm-up epoch "
                      f"{m['warmup_epoch_seconds']:.2f} s ({m['warmup_epoch_cpu_seconds']:.2f} CPU s), label-channel "
                      f"epoch {m['spmi_epoch_seconds']:.2f} s ({m['spmi_epoch_cpu_seconds']:.2f} CPU s); "
                      f"{m['runs']} runs x {m['epochs']} epochs: {m['projected_cpu_hours']:.1f} CPU hours")
        else:
            return build(args, folder, spec, device)
        return 0
    except (ValueError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except cf.process.BrokenProcessPool:
        print("error: a worker process died (killed, or out of memory?); resume with the same command",
              file=sys.stderr)
        return 1
    except (Stop, KeyboardInterrupt):
        print("stopped by a signal: resume with the same command (runs cut off restart)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
