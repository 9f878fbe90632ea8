#!/usr/bin/env python
"""Hyperparameter search for SPMI and its baselines: Optuna TPE proposes, ASHA stops weak
trials early, every trial is an MLflow run under the search's parent run.

    python tuning/search.py --dataset fmnist --preset quick
    python tuning/search.py --dataset cifar10 --num-samples 64 --name spmi-c10
    python tuning/search.py --dataset cifar10 --name spmi-c10 --resume

Bad input is one line on stderr (exit 2) before Ray starts.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

# before ray is imported: snapshot the experiment state every second, so a killed driver
# loses at most about one epoch per running trial; trials keep the driver's working folder
os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # no "creating tables" lines
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the compact CLIReporter table of tuning/runner.py
REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from spmi.data import DATASETS, DataError  # noqa: E402
from spmi.methods import list_methods  # noqa: E402
from tuning import mlflow_log  # noqa: E402
from tuning import plan as P  # noqa: E402
from tuning.settings import PRESETS  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python tuning/search.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", required=True, help=f"one of: {', '.join(sorted(DATASETS))}")
    p.add_argument("--method", default="spmi", help=f"one of: {', '.join(list_methods())}")
    p.add_argument("--preset", choices=sorted(PRESETS), help="quick: a ~15-minute CPU demo (8 trials, up to 8 epochs)")
    p.add_argument("--space", help="search-space YAML (default: search_spaces/<method>_<dataset>[_quick].yaml)")
    data = p.add_argument_group("data (defaults: the paper's settings of the dataset)")
    data.add_argument("--labelled", type=int, help="partially labelled images l")
    data.add_argument("--partial-rate", type=float, help="flipping probability p")
    data.add_argument("--data-root", help="folder of the dataset files")
    data.add_argument("--val-size", type=int, help="held-out validation images (> 0; default 5000)")
    data.add_argument("--unlabelled-size", type=int, help="use a random subset of this many unlabelled images")
    data.add_argument("--no-verify-data", action="store_true", help="skip the MD5 check of the dataset files")
    data.add_argument("--set", action="append", metavar="NAME=VALUE",
                      help="a constant of every trial: a TrainConfig field or method option (repeatable)")
    s = p.add_argument_group("search")
    s.add_argument("--num-samples", type=int, help="trials (default 32)")
    s.add_argument("--max-epochs", type=int, help="epochs of a trial that is never stopped (default 500)")
    s.add_argument("--grace-period", type=int, help="ASHA: epochs before a trial may be stopped "
                                                   "(default: the space's largest warm-up + a margin)")
    s.add_argument("--reduction-factor", type=int, help="ASHA reduction factor (default 3)")
    s.add_argument("--seed", type=int, default=0, help="seed of the Optuna TPE sampler")
    s.add_argument("--name", help="search name (default <method>-<dataset>-<time>); an existing one is resumed")
    s.add_argument("--storage-path", default="hpo_results", help="folder of the searches and the MLflow store")
    s.add_argument("--resume", action="store_true", help="continue the named (or latest) search of method/dataset")
    s.add_argument("--tracking-uri", help="MLflow tracking server (default: sqlite under --storage-path)")
    s.add_argument("--time-budget", metavar="DURATION",
                   help="stop this session gracefully after e.g. 90m, 2h or 1h30m (resumable; report of what finished)")
    r = p.add_argument_group("resources")
    r.add_argument("--gpus-per-trial", type=float,
                   help="GPUs per trial (per worker with --workers-per-trial > 1), fractions allowed for "
                        "single-process trials (default 1 with CUDA, else 0)")
    r.add_argument("--cpus-per-trial", type=int,
                   help="CPU threads per trial (per worker with --workers-per-trial > 1) (default 1 without GPUs)")
    r.add_argument("--workers-per-trial", type=int, default=1, metavar="N",
                   help="DDP workers per trial: > 1 runs each trial as a Ray Train TorchTrainer "
                        "(NCCL on GPUs, gloo on CPUs)")
    r.add_argument("--check-sync", action="store_true",
                   help="DDP trials: check after every epoch that all workers hold identical state "
                        "(a mismatch fails the trial)")
    r.add_argument("--max-concurrent", type=int, help="trials at once (default: as many as the resources allow)")
    r.add_argument("--address", help="connect to this Ray cluster instead of starting a local one")
    return p


def prepare(args: argparse.Namespace) -> tuple[P.SearchPlan, bool]:
    """Resolve and check everything (no Ray yet); returns the plan and whether it resumes."""
    from tuning.spaces import SpaceError  # noqa: F401  (a ValueError)
    storage = Path(args.storage_path).expanduser().resolve()
    named = storage / args.name if args.name else None
    if args.resume or (named is not None and (named / P.PLAN_FILE).exists()):
        path = named if named is not None else P.find_latest(storage, args.method, args.dataset)
        if path is None or not (path / P.PLAN_FILE).exists():
            raise ValueError(f"--resume: no search of {args.method} on {args.dataset} under {storage}"
                             + (f" named {args.name}" if args.name else "") + "; start one without --resume")
        plan = P.load_plan(path)
        if (plan.dataset, plan.method) != (args.dataset, args.method):
            raise ValueError(f"{path} is a search of {plan.method} on {plan.dataset}, "
                             f"not {args.method} on {args.dataset}")
        plan.space()
        P.check_resources(plan.cpus_per_trial, plan.gpus_per_trial, local=args.address is None,
                          workers=plan.workers_per_trial)
        P.check_data(plan.base_config)
        mlflow_log.check_store(plan.tracking_uri)
        return plan, True
    name = args.name or f"{args.method}-{args.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
    uri = args.tracking_uri or mlflow_log.default_uri(storage)
    plan, space = P.make_plan(args, storage, name, uri)
    if mlflow_log.client(uri).get_experiment_by_name(name) is not None:
        raise ValueError(f"the MLflow store {uri} already has an experiment named {name!r}; choose another --name")
    return plan, False


def start_tracking(plan: P.SearchPlan) -> None:
    """Create the search's MLflow experiment and parent run; save the plan."""
    from tuning.trainable import all_params
    artifacts = None
    if plan.tracking_uri.startswith("sqlite:"):
        artifacts = (Path(plan.storage_path) / "mlartifacts" / plan.name).as_uri()
    plan.experiment_id = mlflow_log.ensure_experiment(plan.tracking_uri, plan.name, artifacts)
    space = plan.space()
    settings = {f"search.{k}": getattr(plan, k) for k in (
        "num_samples", "max_epochs", "grace_period", "reduction_factor", "seed", "cpus_per_trial",
        "gpus_per_trial", "workers_per_trial", "max_concurrent", "space_path", "preset", "metric", "mode")}
    fixed = {k: v for k, v in all_params(plan.base_config).items() if k not in space.params}
    tags = {"dataset": plan.dataset, "method": plan.method, "git_commit": plan.git_commit,
            "data_checksum": plan.data_checksum, "searched": ",".join(space.params)}
    plan.parent_run_id = mlflow_log.start_parent(plan.tracking_uri, plan.experiment_id, plan.name, tags,
                                                 {**settings, **fixed})
    plan.save()
    P.copy_space(plan)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from tuning import cost
    try:
        budget = cost.parse_duration(args.time_budget) if args.time_budget else None
        plan, resumed = prepare(args)
    except (ValueError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not resumed:
        try:
            start_tracking(plan)
        except Exception as err:  # MLflow raises its own types
            print(f"error: could not set up MLflow at {plan.tracking_uri}: {err}", file=sys.stderr)
            return 2
    if plan.gpus_per_trial == 0 and plan.workers_per_trial == 1:  # GPUs: the running estimate only
        print("\n".join(cost.start_message(plan, cost.core_matmul_flops())), flush=True)
    from tuning.runner import run_search
    return run_search(plan, resumed, args.address, budget)


if __name__ == "__main__":
    sys.exit(main())
