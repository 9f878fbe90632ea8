#!/usr/bin/env python
"""Confirmation of a finished search: its top K configurations (by final val/acc) trained
with N seeds each at the full budget, as one more Ray Tune run; per configuration mean,
std and 95% t-interval of val/acc and test/acc, the configuration chosen on validation
only, and whether the intervals separate the top configurations.

    python tuning/confirm.py spmi-fmnist-quick --storage-path hpo_results --top 3 --seeds 3
    python tuning/confirm.py spmi-fmnist-quick --storage-path hpo_results          # resumes it

Runs are MLflow children of the search's parent run tagged ``role=confirm``; the result
is ``<search>/report/confirm.{md,parquet}`` and on the parent run. Bad input is one line
on stderr (exit 2) before Ray starts.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from spmi.cli_options import DefaultsFormatter, invoked_as
from spmi.config import resolve
from tuning.cli.environment import apply_environment
from tuning.driver.grid import all_done, run_grid
from tuning.driver.runner import finished, interrupted
from tuning.plan import search_plan as P
from tuning.plan.grid_plan import Cell, ConfirmSettings, GridPlan, TopConfig, load_grid
from tuning.record import mlflow_log, secrets
from tuning.results.confirmation import Verdict, fmt4, metric_names, render, summary

GRID_NAME, PLAN_FILE, ROLE = "confirm", "confirm.json", "confirm"


def command() -> str:
    """This command as it was started (its documented form when ``main`` is called from Python)."""
    return invoked_as("tuning.confirm", "python tuning/confirm.py")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=command(),
                                description=__doc__.split("\n\n")[0], formatter_class=DefaultsFormatter)
    p.add_argument("name", help="the finished search (its folder under --storage-path)")
    p.add_argument("--storage-path", default="hpo_results", help="folder of the searches")
    p.add_argument("--top", type=int, default=3, help="configurations K: the search's best by final val/acc")
    p.add_argument("--seeds", type=int, default=3, help="seeds N per configuration")
    p.add_argument("--first-seed", type=int, default=1,
                   help="seeds are first-seed .. first-seed + N - 1, none of them the search's training seed")
    p.add_argument("--epochs", type=int, help="epochs of every run (default: the search's max_epochs)")
    p.add_argument("--resume", action="store_true", help="continue the search's confirmation (an existing one "
                                                         "is resumed anyway; its settings are kept)")
    r = p.add_argument_group("resources")
    r.add_argument("--cpus-per-trial", type=int, help="CPU threads per run (default: the search's)")
    r.add_argument("--gpus-per-trial", type=float, help="GPUs per run (default: the search's)")
    r.add_argument("--workers-per-trial", type=int, metavar="N", help="DDP workers per run (default: the search's)")
    r.add_argument("--max-concurrent", type=int, help="runs at once (default: as many as the resources allow)")
    r.add_argument("--address", help="connect to this Ray cluster instead of starting a local one")
    return p


def top_configurations(search: P.SearchPlan, k: int) -> list[TopConfig]:
    """The search's ``k`` best distinct configurations, in the order its selection ranks them
    (``tuning.plan.selection``: trials trained to max_epochs first, by the epoch rule's val/acc;
    trials ASHA stopped only when too few finished)."""
    from tuning.plan.selection import distinct
    from tuning.results.trials import read_trials
    space = search.space()
    ranked = search.selection.rank(read_trials(search.storage, search.name, list(space.params),
                                               search.max_epochs, search.metric).table)
    if ranked.empty:
        raise ValueError(f"search {search.name} has no trial with a validation accuracy; run or resume it first")
    table = distinct(ranked, space.params)
    out = []
    for rank, (_, row) in enumerate(table.head(k).iterrows(), start=1):
        params = {}
        for name, param in space.params.items():
            v = row[name].item() if hasattr(row[name], "item") else row[name]
            params[name] = int(v) if param.distribution in ("int", "logint") else v
        out.append(TopConfig(rank=rank, trial_id=row["trial_id"], epochs=int(row["epochs"]),
                             val_acc=float(row["selection_score"]), params=params))
    return out


def prepare(args: argparse.Namespace) -> tuple[GridPlan, P.SearchPlan, bool]:
    if "://" in args.storage_path:
        raise ValueError(f"--storage-path {args.storage_path}: this command works on a local folder (or a mount "
                         f"every node shares, with --address); object storage is for tuning/search.py so far")
    storage = Path(args.storage_path).expanduser().resolve()
    search = P.load_plan(str(storage / args.name))
    if not search.parent_run_id:
        raise ValueError(f"search {args.name} has no MLflow parent run; it never started")
    path = Path(search.experiment_path) / GRID_NAME / PLAN_FILE
    if path.exists():
        grid = load_grid(path, resuming=True)
        P.check_resources(grid.cpus_per_trial, grid.gpus_per_trial, local=args.address is None,
                          workers=grid.workers_per_trial)
        mlflow_log.check_store(grid.tracking_uri)
        return grid, search, True
    if args.resume:
        raise ValueError(f"--resume: search {args.name} has no confirmation to resume; start one without --resume")
    for flag, value in (("--top", args.top), ("--seeds", args.seeds), ("--epochs", args.epochs)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} {value} must be >= 1")
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    if search.base.seed in seeds:  # those runs are the ones the selection saw, not independent of it
        raise ValueError(f"--first-seed {args.first_seed} --seeds {args.seeds} includes seed {search.base.seed}, the "
                         f"seed search {search.name} trained every trial with, so those runs repeat what chose the "
                         f"configurations; use seeds the search did not, e.g. --first-seed {search.base.seed + 1}")
    epochs = args.epochs or search.max_epochs
    workers = args.workers_per_trial or search.workers_per_trial
    gpus = search.gpus_per_trial if args.gpus_per_trial is None else args.gpus_per_trial
    cpus = args.cpus_per_trial or search.cpus_per_trial
    P.check_resources(cpus, gpus, local=args.address is None, workers=workers)
    if args.max_concurrent is not None and args.max_concurrent < 1:
        raise ValueError(f"--max-concurrent {args.max_concurrent} must be >= 1")
    mlflow_log.check_store(search.tracking_uri)
    P.check_data(search.base_config, local=args.address is None)
    top = top_configurations(search, args.top)
    # test accuracy at the last epoch and of the best weights there (tuning.trial.best), not every epoch
    base = resolve({**search.base.to_dict(), "epochs": epochs, "device": "cuda" if gpus > 0 else "cpu",
                    "eval_test": "end"})
    cells = tuple(Cell(f"rank{c.rank}", base, c.params, {"confirm_rank": c.rank, "source_trial": c.trial_id})
                  for c in top)
    grid = GridPlan(
        name=GRID_NAME, storage_path=str(Path(search.experiment_path)), plan_file=PLAN_FILE, cells=cells,
        seeds=list(seeds), epochs=epochs,
        tracking_uri=search.tracking_uri, experiment_id=search.experiment_id, parent_run_id=search.parent_run_id,
        role=ROLE, search=search.name, git_commit=P.git_commit(), cpus_per_trial=cpus, gpus_per_trial=gpus,
        workers_per_trial=workers, check_sync=search.check_sync, max_concurrent=args.max_concurrent,
        extra=ConfirmSettings(tuple(top), search.epoch_rule, search.metric))
    return grid, search, False


def finish(grid: GridPlan, search: P.SearchPlan) -> int:
    runs, table, verdict = summary(grid)
    folder = Path(search.experiment_path) / "report"
    folder.mkdir(parents=True, exist_ok=True)
    table.to_parquet(folder / "confirm.parquet", index=False)
    runs.to_parquet(folder / "confirm_runs.parquet", index=False)
    (folder / "confirm.json").write_text(json.dumps(verdict.to_dict(), indent=2))
    (folder / "confirm.md").write_text(render(grid, search, runs, table, verdict))
    log_to_parent(grid, folder, table, verdict)
    print(f"chosen on validation: {verdict.chosen} "
          + " ".join(f"{k}={v}" for k, v in verdict.params.items()), flush=True)
    for _, row in table.iterrows():
        print(f"  {row['cell']} ({verdict.finished[row['cell']]}): " + "; ".join(
            f"{m} {row[f'{m}/mean']:.4f} ± {fmt4(row[f'{m}/std'])} [{fmt4(row[f'{m}/lo'])}, {fmt4(row[f'{m}/hi'])}]"
            for m in metric_names(verdict.metric).values()), flush=True)
    print(verdict.statement, flush=True)
    print(f"confirmation: {folder / 'confirm.md'}", flush=True)
    return 0


def log_to_parent(grid: GridPlan, folder: Path, table: Any, verdict: Verdict) -> None:
    uri, run_id = grid.tracking_uri, grid.parent_run_id
    try:
        c = mlflow_log.client(uri)
        for name in ("confirm.md", "confirm.parquet", "confirm_runs.parquet", "confirm.json"):
            mlflow_log.retry(lambda name=name: c.log_artifact(run_id, str(folder / name), "confirm"))
        names = metric_names(verdict.metric).values()
        metrics = {f"confirm/{row['cell']}/{m.split(' ')[0].replace('/', '_')}{'_best_val' if 'best' in m else ''}"
                   f"/{s}": row[f"{m}/{s}"] for _, row in table.iterrows() for m in names
                   for s in ("mean", "std", "lo", "hi")}
        mlflow_log.log_metrics(uri, run_id, metrics, step=0)
        mlflow_log.set_tags(uri, run_id, {"confirm.chosen": verdict.chosen,
                                          "confirm.statement": verdict.statement[:5000],
                                          **{f"confirm.chosen.{k}": v for k, v in verdict.params.items()}})
    except Exception as err:  # the files stand without MLflow
        print(f"warning: could not log the confirmation to MLflow ({uri}): {err}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    apply_environment()
    args = build_parser().parse_args(argv)
    from spmi.data import DataError
    try:
        grid, search, resumed = prepare(args)
    except (ValueError, DataError) as err:
        print(f"error: {secrets.mask(str(err))}", file=sys.stderr)
        return 2
    if not resumed:
        grid = dataclasses.replace(grid, command=secrets.mask(command() + " " + shlex.join(
            sys.argv[1:] if argv is None else argv)))
        grid.save()
    states = run_grid(grid, resumed, args.address)
    if states is None:
        return 2
    if not all_done(grid, states):
        return interrupted("confirmation", finished(states), grid.num_trials, "runs",
                           f"{command()} {search.name} --storage-path {search.storage_path} --resume")
    return finish(grid, search)

