#!/usr/bin/env python
"""The SPMI paper's table, ours beside it: (dataset, l, p) rows x methods, each cell's
configuration from a confirmed search, the paper or the authors' code, N seeds at a given
budget as one Ray Tune run; mean +- std of test accuracy over seeds, the paper's number
and the difference, the best per row marked.

    python tuning/reproduce.py --epochs 500 --seeds 3                        # the full table
    python tuning/reproduce.py --datasets fmnist --methods spmi,proden_fixmatch --epochs 2
    python tuning/reproduce.py --config-from code --config-from fmnist/spmi=search:spmi-fmnist-quick
    python tuning/reproduce.py --name reproduce-20250101-120000                # resumes it

Every run is an MLflow run (``role=reproduce``) of one experiment (``--experiment``), under
a parent run carrying the table. Cells whose data are absent are skipped with the reason.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from spmi.cli_options import DefaultsFormatter, invoked_as
from tuning.cli.environment import apply_environment
from tuning.driver.grid import all_done, run_grid
from tuning.driver.runner import finished, interrupted
from tuning.plan import search_plan as P
from tuning.plan import settings as S
from tuning.plan.grid_plan import Cell, GridPlan, SkippedCell, TableCell, TableSettings, load_grid
from tuning.plan.paper_table import PAPER_METHODS, PAPER_ROWS, load_numbers
from tuning.record import mlflow_log, secrets
from tuning.results import reproduction
from tuning.results.trials import grid_results

PLAN_FILE, ROLE, TABLE_DIR = "reproduce.json", "reproduce", "table"


def command() -> str:
    """This command as it was started (its documented form when ``main`` is called from Python)."""
    return invoked_as("tuning.reproduce", "python tuning/reproduce.py")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=command(),
                                description=__doc__.split("\n\n")[0], formatter_class=DefaultsFormatter)
    p.add_argument("--datasets", default=",".join(PAPER_ROWS), help="comma-separated datasets")
    p.add_argument("--methods", default=",".join(PAPER_METHODS), help="comma-separated methods")
    p.add_argument("--setting", action="append", metavar="DATASET:L:P",
                   help="a row: labelled images l and flipping probability p (repeatable; replaces the "
                        "paper's rows of that dataset)")
    p.add_argument("--config-from", action="append", metavar="[DATASET/METHOD=]SOURCE",
                   help="paper, code or search:NAME (the search's confirmed choice, else its best trial), for "
                        "every cell or one (repeatable; default: paper)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per cell")
    p.add_argument("--first-seed", type=int, default=1, help="seeds are first-seed .. first-seed + N - 1")
    p.add_argument("--epochs", type=int, default=S.PAPER_EPOCHS, help="epochs of every run (the paper's)")
    p.add_argument("--data-root", action="append", metavar="[DATASET=]PATH", help="dataset folder (repeatable)")
    p.add_argument("--val-size", type=int, default=0,
                   help="held-out validation images; 0 trains on every training image, the paper's protocol "
                        "(its cells are then compared with the paper)")
    p.add_argument("--unlabelled-size", type=int, help="a random subset of this many unlabelled images (default: "
                                                       "all, the paper's protocol)")
    p.add_argument("--search-config-all-rows", action="store_true",
                   help="apply a --config-from search:NAME configuration to every (l, p) row of its dataset, not "
                        "only to the row it was searched on")
    p.add_argument("--no-verify-data", action="store_true", help="skip the MD5 check of the dataset files")
    p.add_argument("--download", action="store_true", help="fetch a missing dataset (else its rows are skipped)")
    p.add_argument("--set", action="append", metavar="NAME=VALUE", help="a TrainConfig value of every run")
    p.add_argument("--paper-numbers", metavar="CSV", help="the paper's accuracies (dataset, labelled, "
                                                          "partial_rate, method, accuracy in percent)")
    p.add_argument("--name", help="table name (default: reproduce-<time>); an existing one is resumed")
    p.add_argument("--storage-path", default="hpo_results", help="folder of the runs, searches and MLflow store")
    p.add_argument("--resume", action="store_true", help="continue the named (or latest) table")
    p.add_argument("--tracking-uri", help="MLflow tracking server (default: sqlite under --storage-path)")
    p.add_argument("--experiment", default="reproduce", help="MLflow experiment of the runs")
    r = p.add_argument_group("resources")
    r.add_argument("--cpus-per-trial", type=int, help="CPU threads per run (per worker with DDP) (default: 1 "
                                                       "without GPUs, else the cores divided among the GPUs)")
    r.add_argument("--gpus-per-trial", type=float, help="GPUs per run (default: 1 with CUDA, else 0)")
    r.add_argument("--workers-per-trial", type=int, default=1, metavar="N", help="DDP workers per run")
    r.add_argument("--max-concurrent", type=int, help="runs at once (default: as many as the resources allow)")
    r.add_argument("--address", help="connect to this Ray cluster instead of starting a local one")
    return p


def _split(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def rows_of(datasets: list[str], settings: list[str]) -> list[tuple[str, int, float]]:
    given: dict[str, list[tuple[int, float]]] = {}
    for item in settings:
        parts = item.split(":")
        try:
            ds, l_, p_ = parts
            given.setdefault(ds, []).append((int(l_), float(p_)))
        except ValueError:
            raise ValueError(f"--setting {item!r}: write DATASET:L:P, e.g. fmnist:4000:0.3") from None
        if ds not in datasets:
            raise ValueError(f"--setting {item}: dataset {ds} is not among --datasets")
    rows = []
    for ds in datasets:
        for labelled, rate in given.get(ds) or PAPER_ROWS.get(ds) or [_paper_row(ds)]:
            rows.append((ds, int(labelled), float(rate)))
    return rows


def sources_of(items: list[str], datasets: list[str], methods: list[str]) -> dict[tuple[str, str], str]:
    """(dataset, method) -> paper | code | search:NAME."""
    out = {(d, m): "paper" for d in datasets for m in methods}
    for item in items:
        where, sep, source = item.rpartition("=")
        if not (source in ("paper", "code") or (source.startswith("search:") and len(source) > 7)):
            raise ValueError(f"--config-from {item!r}: the source is paper, code or search:NAME")
        if not sep:
            out = {k: source for k in out}
            continue
        ds, slash, method = where.partition("/")
        if not slash or (ds, method) not in out:
            raise ValueError(f"--config-from {item!r}: write DATASET/METHOD=SOURCE with a chosen dataset and method")
        out[(ds, method)] = source
    return out


def roots_of(items: list[str], datasets: list[str]) -> dict[str, str]:
    from spmi.data import default_root
    roots = {d: str(default_root(d).resolve()) for d in datasets}
    for item in items:
        ds, sep, path = item.partition("=")
        if sep and ds in roots:
            roots[ds] = str(Path(path).expanduser().resolve())
        elif not sep:
            roots = {d: str(Path(item).expanduser().resolve()) for d in datasets}
        else:
            raise ValueError(f"--data-root {item!r}: {ds} is not among --datasets")
    return roots


def _paper_row(dataset: str) -> tuple[int, float]:
    """The dataset's paper setting (l, p), from its registry entry."""
    from spmi.data import get_info
    info = get_info(dataset)
    return int(info.labelled), float(info.partial_rate)


def search_row(source: str, dataset: str, method: str, storage: Path) -> tuple[int, float]:
    """The (l, p) row that the search ``source`` (``search:NAME``) was run on."""
    name = source[len("search:"):]
    search = P.load_plan(str(storage / name))
    if (search.dataset, search.method) != (dataset, method):
        raise ValueError(f"--config-from {dataset}/{method}={source}: {name} is a search of "
                         f"{search.method} on {search.dataset}")
    return int(search.base.labelled), float(search.base.partial_rate)


def cell_config(source: str, dataset: str, method: str, storage: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(base values, the cell's own values) of a source. A search gives its selected
    configuration (confirmed, else the report's) and the fixed settings of its space, never
    its data protocol (labelled, p, held-out and unlabelled sizes): the table's row sets those."""
    from tuning.plan.spaces import load_space
    if source.startswith("search:"):
        name = source[len("search:"):]
        search_row(source, dataset, method, storage)
        search = P.load_plan(str(storage / name))
        space = search.space()
        report = Path(search.experiment_path) / "report"
        for file, key in (("confirm.json", "params"), ("best.json", "best")):
            if (report / file).exists():
                found = json.loads((report / file).read_text())[key]
                if found:
                    return {**space.settings, **space.fixed}, dict(found.get("params", found) if key == "best"
                                                                  else found)
        raise ValueError(f"--config-from {source}: the search has no report; let it finish (or confirm it)")
    space = load_space(S.default_space(method), method, dataset)
    values = space.paper_values if source == "paper" else space.code_values
    return {**space.settings, **space.fixed}, dict(values)


def is_paper_protocol(cfg: Any) -> bool:
    """Whether a cell trains as the paper did: on every training image, all of them unlabelled too."""
    return cfg.val_size == 0 and cfg.val_from_labelled == 0 and cfg.unlabelled_size is None


def protocol_of(cfg: Any) -> str:
    """A cell's data protocol in words (what of the training set it trains and validates on)."""
    held = f"{cfg.val_size} held out for validation" if cfg.val_size else "every training image (the paper's)"
    carved = f", {cfg.val_from_labelled} of the labelled carved for validation" if cfg.val_from_labelled else ""
    unl = f"{cfg.unlabelled_size} unlabelled" if cfg.unlabelled_size else "all unlabelled"
    return f"l={cfg.labelled}, p={cfg.partial_rate:g}; {held}{carved}; {unl}"


def prepare(args: argparse.Namespace) -> tuple[GridPlan, bool]:
    from spmi.config import config_from_flat, resolve
    from spmi.data import DataError, get_info
    from spmi.methods import get_method
    if "://" in args.storage_path:
        raise ValueError(f"--storage-path {args.storage_path}: this command works on a local folder (or a mount "
                         f"every node shares, with --address); object storage is for tuning/search.py so far")
    storage = Path(args.storage_path).expanduser().resolve()
    named = storage / args.name if args.name else None
    if args.resume or (named is not None and (named / PLAN_FILE).exists()):
        latest = sorted(storage.glob(f"*/{PLAN_FILE}"), key=lambda p: p.stat().st_mtime)
        path = named if named is not None else (latest[-1].parent if latest else None)
        if path is None or not (path / PLAN_FILE).exists():
            raise ValueError(f"--resume: no table under {storage}" + (f" named {args.name}" if args.name else "")
                             + "; start one without --resume")
        grid = load_grid(path / PLAN_FILE, resuming=True)
        P.check_resources(grid.cpus_per_trial, grid.gpus_per_trial, local=args.address is None,
                          workers=grid.workers_per_trial)
        mlflow_log.check_store(grid.tracking_uri)
        return grid, True
    datasets, methods = _split(args.datasets), _split(args.methods)
    for d in datasets:
        get_info(d)
    for m in methods:
        get_method(m)
    if not datasets or not methods:
        raise ValueError("--datasets and --methods need at least one name each")
    name = args.name or f"reproduce-{time.strftime('%Y%m%d-%H%M%S')}"
    if not P.NAME_RE.match(name):
        raise ValueError(f"--name {name!r}: use letters, digits, '.', '_' or '-'")
    for flag, value in (("--seeds", args.seeds), ("--epochs", args.epochs)):
        if value < 1:
            raise ValueError(f"{flag} {value} must be >= 1")
    gpus = args.gpus_per_trial if args.gpus_per_trial is not None else P.default_gpus()
    cpus = args.cpus_per_trial or P.default_cpus(gpus)
    P.check_resources(cpus, gpus, local=args.address is None, workers=args.workers_per_trial)
    if args.max_concurrent is not None and args.max_concurrent < 1:
        raise ValueError(f"--max-concurrent {args.max_concurrent} must be >= 1")
    if args.tracking_uri and secrets.has_password(args.tracking_uri):
        raise ValueError(f"--tracking-uri {secrets.mask(args.tracking_uri)} carries a password, which would be "
                         f"stored with the reproduction; give the credentials as MLFLOW_TRACKING_USERNAME and "
                         f"MLFLOW_TRACKING_PASSWORD (on every node) instead")
    uri = args.tracking_uri or mlflow_log.default_uri(storage)
    mlflow_log.check_store(uri)
    numbers = load_numbers(args.paper_numbers)
    rows, sources = rows_of(datasets, args.setting or []), sources_of(args.config_from or [], datasets, methods)
    roots = roots_of(args.data_root or [], datasets)
    cells, facts, skipped, checksums = [], [], [], {}
    for ds, labelled, rate in rows:
        common = {"dataset": ds, "labelled": labelled, "partial_rate": rate, "epochs": args.epochs,
                  "device": "cuda" if gpus > 0 else "cpu", "progress": False, "out": None, "data_root": roots[ds]}
        common |= {"val_size": args.val_size, "unlabelled_size": args.unlabelled_size, "val_from_labelled": 0}
        if args.no_verify_data:
            common["verify_data"] = False
        if args.download:
            common["download"] = True
        try:
            key = (ds, roots[ds])
            if key not in checksums:
                checksums[key] = P.check_data(config_from_flat(common))
        except DataError as err:
            skipped += [SkippedCell(ds, labelled, rate, m, str(err).splitlines()[0]) for m in methods]
            continue
        for method in methods:
            source = sources[(ds, method)]
            if source.startswith("search:") and not args.search_config_all_rows and (
                    search_row(source, ds, method, storage) != (labelled, rate)):
                searched = search_row(source, ds, method, storage)
                print(f"note: {ds}/{method} l={labelled} p={rate:g}: {source} was searched at l={searched[0]} "
                      f"p={searched[1]:g}; this row uses the paper's configuration (--search-config-all-rows "
                      f"applies it to every row)", flush=True)
                source = "paper"
            base, values = cell_config(source, ds, method, storage)
            sets = P.parse_sets(args.set or [], method)  # nothing is searched here
            # test accuracy at the last epoch and of the best weights there (tuning.trial.best); --set may change it
            base = {**base, **common, "eval_test": "end", **sets, "method": method}
            resolve({**values, "device": "cpu"}, config_from_flat(base))
            key = f"{ds}-l{labelled}-p{rate:g}-{method}"
            cfg = resolve(base)
            protocol = protocol_of(cfg)
            cells.append(Cell(key, cfg, values, {"row": f"{ds} / {labelled} / {rate:g}", "config_from": source,
                                                 "reproduce": name, "protocol": protocol}))
            facts.append(TableCell(key, ds, labelled, rate, method, source, numbers.get((ds, labelled, rate, method)),
                                   protocol, paper_protocol=is_paper_protocol(cfg)))
    if not cells:
        raise ValueError("no cell has its data on this machine: " + "; ".join(
            sorted({f"{s.dataset}: {s.reason}" for s in skipped})))
    grid = GridPlan(
        name=name, storage_path=str(storage), plan_file=PLAN_FILE, cells=cells,
        seeds=list(range(args.first_seed, args.first_seed + args.seeds)), epochs=args.epochs, tracking_uri=uri,
        experiment_id="", parent_run_id="", role=ROLE, search=name, git_commit=P.git_commit(),
        cpus_per_trial=cpus, gpus_per_trial=gpus, workers_per_trial=args.workers_per_trial,
        max_concurrent=args.max_concurrent,
        extra=TableSettings(tuple(datasets), tuple(methods), tuple(rows), tuple(skipped), args.experiment,
                            tuple(facts)))
    return grid, False


def start_tracking(grid: GridPlan) -> GridPlan:
    """Create the table's MLflow experiment and parent run; the grid with their ids, saved."""
    artifacts = None
    if grid.tracking_uri.startswith("sqlite:"):
        artifacts = (Path(grid.storage_path) / "mlartifacts" / grid.extra.experiment).as_uri()
    grid = dataclasses.replace(grid, experiment_id=mlflow_log.ensure_experiment(
        grid.tracking_uri, grid.extra.experiment, artifacts))
    tags = {"reproduce": grid.name, "git_commit": grid.git_commit, **mlflow_log.standard_tags(grid.git_commit),
            "mlflow.source.name": "tuning/reproduce.py", "mlflow.note.content": f"```\n{grid.command}\n```"}
    params = {"epochs": grid.epochs, "seeds": ",".join(map(str, grid.seeds)),
              "datasets": ",".join(grid.extra.datasets), "methods": ",".join(grid.extra.methods),
              "workers_per_trial": grid.workers_per_trial, "gpus_per_trial": grid.gpus_per_trial,
              "cpus_per_trial": grid.cpus_per_trial}
    c = mlflow_log.client(grid.tracking_uri)
    run = c.create_run(grid.experiment_id, run_name=f"table {grid.name}", tags={**tags, "role": "reproduce-table"})
    mlflow_log.log_params(grid.tracking_uri, run.info.run_id, params)
    grid = dataclasses.replace(grid, parent_run_id=run.info.run_id)
    grid.save()
    return grid


def finish(grid: GridPlan) -> int:
    folder = grid.experiment_path / TABLE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    frame = reproduction.table(grid)
    frame.to_parquet(folder / "table.parquet", index=False)
    frame.to_csv(folder / "table.csv", index=False)
    grid_results(grid).to_parquet(folder / "runs.parquet", index=False)
    from tuning.results import plots  # (matplotlib: only when a table is drawn)
    plots.paper_table(frame, list(grid.extra.methods), f"{grid.name}: {grid.epochs} epochs, {len(grid.seeds)} seeds",
                      folder / "table.png")
    text = reproduction.render(grid, frame)
    (folder / "table.md").write_text(text)
    try:
        c = mlflow_log.client(grid.tracking_uri)
        mlflow_log.retry(lambda: c.log_artifacts(grid.parent_run_id, str(folder), TABLE_DIR))
        ran = frame[frame["status"] == "ran"]
        mlflow_log.log_metrics(grid.tracking_uri, grid.parent_run_id, {
            f"{r.dataset}-l{r.labelled}-p{r.partial_rate:g}/{r.method}/test_acc_{s}": getattr(r, f"test_acc_{s}")
            for r in ran.itertuples() for s in ("mean", "std")}, step=0)
        mlflow_log.terminate(grid.tracking_uri, grid.parent_run_id, "FINISHED")
    except Exception as err:
        print(f"warning: could not log the table to MLflow ({grid.tracking_uri}): {err}", file=sys.stderr)
    print(text.split("## All cells")[0].rstrip(), flush=True)
    print(f"table: {folder / 'table.md'}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    apply_environment()
    args = build_parser().parse_args(argv)
    from spmi.data import DataError
    from tuning.plan.spaces import SpaceError
    try:
        grid, resumed = prepare(args)
    except (ValueError, DataError, SpaceError) as err:
        print(f"error: {secrets.mask(str(err))}", file=sys.stderr)
        return 2
    if not resumed:
        grid = dataclasses.replace(grid, command=secrets.mask(command() + " " + shlex.join(
            sys.argv[1:] if argv is None else argv)))
        try:
            grid = start_tracking(grid)
        except Exception as err:
            print(f"error: could not set up MLflow at {grid.tracking_uri}: {err}", file=sys.stderr)
            return 2
    else:
        mlflow_log.reopen(grid.tracking_uri, grid.parent_run_id)
    for s in grid.extra.skipped:
        print(f"skipped {s.dataset} l={s.labelled} p={s.partial_rate:g} {s.method}: {s.reason}",
              flush=True)
    states = run_grid(grid, resumed, args.address)
    if states is None:
        mlflow_log.terminate(grid.tracking_uri, grid.parent_run_id, "FAILED")
        return 2
    if not all_done(grid, states):
        return interrupted("table", finished(states), grid.num_trials, "runs",
                           f"{command()} --storage-path {grid.storage_path} --name {grid.name}")
    return finish(grid)

