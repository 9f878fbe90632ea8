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
import dataclasses
import os
import shlex
import sys
import time
from pathlib import Path

from spmi.cli_options import DefaultsFormatter, invoked_as
from spmi.config import TrainConfig
from spmi.data import DATASETS, DataError
from spmi.methods import list_methods
from spmi.options import meta
from tuning.cli.environment import apply_environment
from tuning.driver.lock import SearchLock
from tuning.plan import search_plan as P
from tuning.plan import settings as S
from tuning.plan.selection import DEFAULT_EPOCH_RULE, EPOCH_RULES
from tuning.plan.settings import PRESETS
from tuning.record import mlflow_log, secrets
from tuning.record.storage import Storage, open_storage


def command() -> str:
    """This command as it was started (its documented form when ``main`` is called from Python)."""
    return invoked_as("tuning.search", "python tuning/search.py")


def preset_note(key: str, config: bool = False, form: str = "{}") -> str:
    """``; --preset quick: 8`` for each preset that sets ``key`` (a plan field, or with
    ``config`` a config value; its value written as ``form``): the defaults a preset
    replaces, for the help texts."""
    notes = []
    for name, preset in sorted(PRESETS.items()):
        values = preset.get("config", {}) if config else preset
        if key in values:  # type: ignore[operator]
            notes.append(f"; --preset {name}: " + form.format(values[key]))  # type: ignore[index]
    return "".join(notes)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=command(),
                                description=__doc__.split("\n\n")[0], formatter_class=DefaultsFormatter)
    p.add_argument("--dataset", required=True, help=f"one of: {', '.join(sorted(DATASETS))}")
    p.add_argument("--method", default="spmi", help=f"one of: {', '.join(list_methods())}")
    quick = PRESETS["quick"]
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help=f"quick: {quick['num_samples']} trials of up to {quick['max_epochs']} epochs, "
                        f"{quick['max_concurrent']} at a time, on {quick['config']['labelled']} labelled images "
                        f"(a CPU demo: {S.QUICK_DEMO_TIME})")
    p.add_argument("--space", help="search-space YAML (default: the package's search_spaces/<method>.yaml), "
                                   "resolved for the dataset and preset")
    data = p.add_argument_group("data")
    data.add_argument("--labelled", type=int,
                      help=f"partially labelled images l (default: the dataset's paper setting"
                           f"{preset_note('labelled', config=True)})")
    data.add_argument("--partial-rate", type=float, help="flipping probability p (default: the dataset's paper "
                                                         "setting)")
    data.add_argument("--data-root", help="folder of the dataset files (with --address: that folder on every node)")
    data.add_argument("--val-size", type=int, help=f"held-out validation images, > 0 (default: {TrainConfig.val_size}"
                                                   f"{preset_note('val_size', config=True)})")
    data.add_argument("--unlabelled-size", type=int,
                      help=f"use a random subset of this many unlabelled images (default: all"
                           f"{preset_note('unlabelled_size', config=True)})")
    data.add_argument("--val-labels", choices=meta(TrainConfig, "val_labels")["choices"],
                      help=meta(TrainConfig, "val_labels")["help"] + " (default: true)")
    data.add_argument("--val-from-labelled", type=int, metavar="K",
                      help=meta(TrainConfig, "val_from_labelled")["help"] + " (default: 0)")
    data.add_argument("--no-verify-data", action="store_true",
                      help="skip the MD5 check of the dataset files against the dataset's spec; the driver's files "
                           "are then the reference every node's must equal")
    data.add_argument("--set", action="append", metavar="NAME=VALUE",
                      help="a constant of every trial: a TrainConfig field or method option (repeatable)")
    s = p.add_argument_group("search")
    s.add_argument("--num-samples", type=int,
                   help=f"trials (default: {S.DEFAULT_NUM_SAMPLES}{preset_note('num_samples')})")
    s.add_argument("--max-epochs", type=int, help=f"epochs of a trial that is never stopped (default: "
                                                  f"{S.PAPER_EPOCHS}, the paper's{preset_note('max_epochs')})")
    s.add_argument("--grace-period", type=int, help=f"ASHA: epochs before a trial may be stopped (default: the "
                                                    f"space's largest warm-up + {S.DEFAULT_GRACE_MARGIN}"
                                                    f"{preset_note('grace_margin', form='+ {}')})")
    s.add_argument("--reduction-factor", type=int, help=f"ASHA reduction factor (default: "
                                                        f"{S.DEFAULT_REDUCTION_FACTOR}{preset_note('reduction_factor')})")
    s.add_argument("--seed", type=int, help="seed of the Optuna TPE sampler (default: 0)")
    s.add_argument("--metric", choices=S.OBJECTIVES,
                   help="the validation metric the search selects on (ASHA stops on it, TPE is told it, the report, "
                        "the published model and the confirmation rank by it): val/acc needs clean validation "
                        "labels; val/covering_rate and val/approx_acc need only candidate sets (--val-labels partial "
                        "or --val-from-labelled K) (default: val/acc)")
    s.add_argument("--searcher", choices=S.SEARCHERS,
                   help="who proposes the trials: Optuna's TPE, random search, or a grid over the space's explicit "
                        "values (categorical choices, every integer; the grid's size is the trial count) "
                        "(default: tpe)")
    s.add_argument("--scheduler", choices=S.SCHEDULERS,
                   help="who stops trials early: ASHA (--grace-period, --reduction-factor), HyperBand "
                        "(--reduction-factor) or FIFO (none) (default: asha)")
    s.add_argument("--epoch-rule", choices=EPOCH_RULES,
                   help="which epoch's value of the metric scores a trial at the full budget: best (the network a "
                        "trial keeps) or last (its final epoch); the report, Optuna, the published model and the "
                        "confirmation all select by it (default: best)")
    s.add_argument("--name", help="search name (default: <method>-<dataset>-<time>); an existing one is resumed")
    s.add_argument("--storage-path", default="hpo_results",
                   help="where the searches live: a folder, or a URI every node can reach (s3://bucket/prefix, "
                        "gs://..., any pyarrow filesystem)")
    s.add_argument("--storage-endpoint", metavar="URL",
                   help="S3-compatible endpoint of an s3:// --storage-path (MinIO, Ceph, ...) (default: "
                        "$AWS_ENDPOINT_URL_S3 or $AWS_ENDPOINT_URL, else AWS)")
    s.add_argument("--shared-storage", action="store_true",
                   help="with --address: the local --storage-path is a mount every node shares at the same path")
    s.add_argument("--resume", action="store_true", help="continue the named (or latest) search of method/dataset")
    s.add_argument("--forward-secrets", action="store_true",
                   help="with --address, also hand the driver's AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, "
                        "AWS_SESSION_TOKEN, MLFLOW_TRACKING_USERNAME/PASSWORD/TOKEN to the trials in the Ray job's "
                        "runtime environment, which Ray stores and shows to whoever reaches its dashboard or Jobs "
                        "API; without it the nodes must have their own credentials (docs/cluster.md, Security)")
    s.add_argument("--tracking-uri", help="MLflow tracking server (default: sqlite under --storage-path)")
    s.add_argument("--optuna-storage", metavar="URL",
                   help="SQLAlchemy URL of the Optuna study's database, e.g. postgresql://user@host/db with the "
                        "password in $PGPASSWORD or ~/.pgpass (default: sqlite under --storage-path); the study is "
                        "named like the search. A password in the URL is used but never stored or shown: a "
                        "--resume takes it from $PGPASSWORD/~/.pgpass or from --optuna-storage again")
    s.add_argument("--warm-start", metavar="NAME",
                   help="seed TPE with the evaluated trials of the earlier search NAME (same Optuna storage)")
    s.add_argument("--time-budget", metavar="DURATION",
                   help="stop this session gracefully after e.g. 90m, 2h or 1h30m (resumable; report of what finished)")
    r = p.add_argument_group("resources")
    r.add_argument("--gpus-per-trial", type=float,
                   help="GPUs per trial (per worker with --workers-per-trial > 1), fractions allowed for "
                        "single-process trials (default: 1 with CUDA, else 0)")
    r.add_argument("--cpus-per-trial", type=int,
                   help=f"CPU threads per trial (per worker with --workers-per-trial > 1) (default: 1 without "
                        f"GPUs, else the cores divided among the GPUs{preset_note('cpus_per_trial')})")
    r.add_argument("--workers-per-trial", type=int, metavar="N",
                   help="DDP workers per trial: > 1 runs each trial as a Ray Train TorchTrainer "
                        "(NCCL on GPUs, gloo on CPUs) (default: 1)")
    r.add_argument("--check-sync", action="store_true",
                   help="DDP trials: check after every epoch that all workers hold identical state "
                        "(a mismatch fails the trial)")
    r.add_argument("--max-concurrent", type=int, help=f"trials at once (default: as many as the resources allow"
                                                      f"{preset_note('max_concurrent')})")
    r.add_argument("--address", help="connect to this Ray cluster instead of starting a local one ('auto' inside "
                                     "`ray job submit`); needs storage and tracking every node can reach")
    return p


def check_cluster_reach(address: str | None, storage: Storage, tracking_uri: str, shared: bool) -> None:
    """With ``--address`` trials run on other machines: refuse storage and an MLflow store
    that only this machine has (ValueError, one line, saying what to use instead)."""
    if not address:
        return
    if storage.local and not shared:
        raise ValueError(f"--address: --storage-path {storage.root} is a folder on this machine that trials on "
                         f"other nodes cannot reach; use --storage-path s3://BUCKET/PREFIX (plus --storage-endpoint "
                         f"URL for an S3-compatible store), or add --shared-storage if every node mounts it there")
    on_disk = tracking_uri.startswith(("sqlite:", "file:")) or (
        ":" not in tracking_uri and not tracking_uri.startswith("databricks"))  # a database file, or a folder
    if on_disk:
        raise ValueError(f"--address: the MLflow store {tracking_uri} is a file on this machine that trials on other "
                         f"nodes cannot reach (and SQLite is unsafe on a shared mount); run an MLflow server "
                         f"(mlflow server --backend-store-uri postgresql://... --artifacts-destination s3://...) "
                         f"and pass --tracking-uri http://HOST:PORT")


def prepare(args: argparse.Namespace) -> tuple[P.SearchPlan, bool]:
    """Resolve and check everything (no Ray yet); returns the plan and whether it resumes."""
    from tuning.plan.spaces import SpaceError  # noqa: F401  (a ValueError)
    if args.tracking_uri and secrets.has_password(args.tracking_uri):
        raise ValueError(f"--tracking-uri {secrets.mask(args.tracking_uri)} carries a password, which would be "
                         f"stored with the search; give the credentials as MLFLOW_TRACKING_USERNAME and "
                         f"MLFLOW_TRACKING_PASSWORD (on every node) instead")
    storage = open_storage(args.storage_path, args.storage_endpoint)
    if args.address and args.tracking_uri:
        check_cluster_reach(args.address, storage, args.tracking_uri, args.shared_storage)
    storage.check()
    if storage.local:
        P.check_writable(Path(storage.root))
    if args.resume or (args.name and storage.is_file(args.name, P.PLAN_FILE)):
        name = args.name or P.find_latest(storage, args.method, args.dataset)
        if name is None or not storage.is_file(name, P.PLAN_FILE):
            raise ValueError(f"--resume: no search of {args.method} on {args.dataset} under {storage.root}"
                             + (f" named {args.name}" if args.name else "") + "; start one without --resume")
        plan = P.load_plan(storage.uri(name), storage.endpoint)
        path = plan.experiment_path
        if (plan.dataset, plan.method) != (args.dataset, args.method):
            raise ValueError(f"{path} is a search of {plan.method} on {plan.dataset}, "
                             f"not {args.method} on {args.dataset}")
        P.check_layout(plan.version, path, "search")
        check_resume_flags(args, plan)
        plan = resumed_study(plan, args.optuna_storage)
        check_cluster_reach(args.address, storage, plan.tracking_uri, args.shared_storage)
        plan.space()
        P.check_resources(plan.cpus_per_trial, plan.gpus_per_trial, local=args.address is None,
                          workers=plan.workers_per_trial)
        P.check_data(plan.base_config, local=args.address is None)
        mlflow_log.check_store(plan.tracking_uri)
        mlflow_log.check_search_records(plan.tracking_uri, plan.experiment_id, plan.parent_run_id, plan.name)
        return plan, True
    name = args.name or f"{args.method}-{args.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
    if not storage.local and not args.tracking_uri:
        raise ValueError(f"--storage-path {storage.root} is not a local folder, so there is no default MLflow store; "
                         f"pass --tracking-uri (an MLflow server, http://HOST:PORT)")
    uri = args.tracking_uri or mlflow_log.default_uri(storage.root)
    check_cluster_reach(args.address, storage, uri, args.shared_storage)
    plan, space = P.make_plan(search_options(args), storage, name, uri)
    if mlflow_log.client(uri).get_experiment_by_name(name) is not None:
        raise ValueError(f"the MLflow store {uri} already has an experiment named {name!r}; choose another --name")
    return plan, False


def resume_settings(args: argparse.Namespace, plan: P.SearchPlan) -> dict[str, tuple[object, object]]:
    """``{flag: (value asked for, the search's)}`` of the flags that shape a search, as the
    command line gives them (None: not given)."""
    from tuning.trial.run import all_params
    cfg = plan.base
    space = None if args.space is None else str(Path(args.space).resolve())
    data_root = None if args.data_root is None else str(Path(args.data_root).expanduser().resolve())
    out: dict[str, tuple[object, object]] = {
        "--num-samples": (args.num_samples, plan.num_samples), "--max-epochs": (args.max_epochs, plan.max_epochs),
        "--grace-period": (args.grace_period, plan.grace_period),
        "--reduction-factor": (args.reduction_factor, plan.reduction_factor), "--seed": (args.seed, plan.seed),
        "--preset": (args.preset, plan.preset), "--space": (space, plan.space_path),
        "--labelled": (args.labelled, cfg.labelled), "--partial-rate": (args.partial_rate, cfg.partial_rate),
        "--val-size": (args.val_size, cfg.val_size), "--unlabelled-size": (args.unlabelled_size, cfg.unlabelled_size),
        "--val-labels": (args.val_labels, cfg.val_labels),
        "--val-from-labelled": (args.val_from_labelled, cfg.val_from_labelled),
        "--data-root": (data_root, cfg.data_root),
        "--no-verify-data": (True if args.no_verify_data else None, not cfg.verify_data),
        "--max-concurrent": (args.max_concurrent, plan.max_concurrent),
        "--cpus-per-trial": (args.cpus_per_trial, plan.cpus_per_trial),
        "--gpus-per-trial": (args.gpus_per_trial, plan.gpus_per_trial),
        "--workers-per-trial": (args.workers_per_trial, plan.workers_per_trial),
        "--check-sync": (True if args.check_sync else None, plan.check_sync),
        "--warm-start": (args.warm_start, plan.warm_start), "--tracking-uri": (args.tracking_uri, plan.tracking_uri),
        "--metric": (args.metric, plan.metric), "--epoch-rule": (args.epoch_rule, plan.epoch_rule),
        "--searcher": (args.searcher, plan.searcher), "--scheduler": (args.scheduler, plan.scheduler),
    }
    if args.set:
        have = all_params(cfg)
        for name, value in P.parse_sets(list(args.set), plan.method).items():
            out[f"--set {name}"] = (value, have.get(name))
    return out


def check_resume_flags(args: argparse.Namespace, plan: P.SearchPlan) -> None:
    """A resumed search keeps the settings it started with: Ray restores its trial count,
    scheduler, concurrency and sampler as saved, and its trials were trained on its data.
    A flag asking for another value is refused (ValueError, one line, naming it)."""
    for flag, (asked, kept) in resume_settings(args, plan).items():
        if asked is None or asked == kept:
            continue
        if isinstance(asked, bool):
            what = f"{flag}: search {plan.name} was started without it"
        else:
            sep = "=" if flag.startswith("--set") else " "
            what = f"{flag}{sep}{asked}: search {plan.name} was started with {kept}"
        raise ValueError(f"--resume: {what}, and a resumed search keeps its settings (Ray restores its trial count, "
                         f"scheduler and sampler as saved); drop the flag to resume it, or start a new search with "
                         f"another --name (--warm-start {plan.name} seeds it with these trials where the data agree)")


def resumed_study(plan: P.SearchPlan, asked: str | None) -> P.SearchPlan:
    """The plan with the study where it is now: ``--optuna-storage`` (a moved database) where
    it holds the search's study, else the plan's (found beside a moved search folder)."""
    from tuning.record import optuna_study
    url = asked or plan.optuna_storage
    if not asked and secrets.is_masked(url):  # search.json keeps no password: the database client's own
        url = secrets.without_password(url)
    try:
        found = not url or optuna_study.study_exists(url, plan.name)
    except Exception as err:  # SQLAlchemy's own types: a refused password, an unreachable host
        raise ValueError(f"--resume: the Optuna storage {secrets.mask(url)} cannot be opened ({err}); search.json "
                         f"keeps no database password: give it as $PGPASSWORD or in ~/.pgpass") from None
    if not found:
        hint = ("" if asked else "; if the database moved (or the search folder moved without its storage path's "
                f"{optuna_study.STORAGE_FILE}), pass --optuna-storage URL of the one that holds it")
        raise ValueError(f"--resume: the Optuna storage {secrets.mask(url)} has no study named {plan.name!r}{hint}")
    return dataclasses.replace(plan, optuna_storage=url)


def search_options(args: argparse.Namespace) -> P.SearchOptions:
    """What the command line asks of a new search."""
    return P.SearchOptions(
        dataset=args.dataset, method=args.method, preset=args.preset, space=args.space, labelled=args.labelled,
        partial_rate=args.partial_rate, data_root=args.data_root, val_size=args.val_size,
        unlabelled_size=args.unlabelled_size, val_labels=args.val_labels, val_from_labelled=args.val_from_labelled,
        verify_data=not args.no_verify_data, sets=tuple(args.set or ()),
        num_samples=args.num_samples, max_epochs=args.max_epochs, grace_period=args.grace_period,
        reduction_factor=args.reduction_factor, seed=0 if args.seed is None else args.seed,
        max_concurrent=args.max_concurrent, gpus_per_trial=args.gpus_per_trial, cpus_per_trial=args.cpus_per_trial,
        workers_per_trial=1 if args.workers_per_trial is None else args.workers_per_trial,
        check_sync=args.check_sync, local=args.address is None,
        optuna_storage=args.optuna_storage, warm_start=args.warm_start,
        epoch_rule=args.epoch_rule or DEFAULT_EPOCH_RULE, metric=args.metric or S.METRIC,
        searcher=args.searcher or "tpe", scheduler=args.scheduler or "asha")


def start_tracking(plan: P.SearchPlan) -> P.SearchPlan:
    """Create the search's Optuna study, MLflow experiment and parent run; the plan with
    their ids, saved (with the space's copy)."""
    from tuning.record import optuna_study
    from tuning.trial.run import all_params, split_profile
    study = optuna_study.create_study(plan.optuna_storage, plan.name, plan.mode, plan.study_attrs)
    if plan.warm_start:
        copied, skipped = optuna_study.warm_start(
            study, plan.optuna_storage, plan.warm_start, plan.space().distributions(), plan.max_epochs,
            score=lambda steps: plan.selection.value(steps, maximize=plan.mode == "max"))
        if plan.tpe is not None:  # TPE's random start-up trials come after the copied ones
            plan = dataclasses.replace(plan, tpe=dataclasses.replace(plan.tpe, seeded=plan.tpe.seeded + copied))
        print(f"warm start: {copied} evaluated trials of {plan.warm_start} seed the study"
              + (f" ({skipped} outside this space skipped)" if skipped else ""), flush=True)
    artifacts = None
    if plan.tracking_uri.startswith("sqlite:"):  # (a server has its own artifact store)
        storage = plan.storage
        artifacts = storage.uri("mlartifacts", plan.name)
        if storage.local:
            artifacts = Path(artifacts).as_uri()
    plan = dataclasses.replace(plan, experiment_id=mlflow_log.ensure_experiment(plan.tracking_uri, plan.name,
                                                                                 artifacts))
    space = plan.space()
    settings = {f"search.{k}": getattr(plan, k) for k in (
        "num_samples", "max_epochs", "grace_period", "reduction_factor", "seed", "cpus_per_trial",
        "gpus_per_trial", "workers_per_trial", "max_concurrent", "space_path", "preset", "metric", "mode",
        "optuna_storage", "warm_start", "epoch_rule", "searcher", "scheduler")}
    settings["search.optuna_storage"] = secrets.mask(settings["search.optuna_storage"] or "") or None
    settings |= {f"search.tpe.{k}": v for k, v in dataclasses.asdict(plan.tpe).items()} if plan.tpe else {}
    fixed = {k: v for k, v in all_params(plan.base_config).items() if k not in space.params}
    tags = {"dataset": plan.dataset, "method": plan.method, "git_commit": plan.git_commit, "metric": plan.metric,
            "searcher": plan.searcher, "scheduler": plan.scheduler, "epoch_rule": plan.epoch_rule,
            "data_checksum": plan.data_checksum, "searched": ",".join(space.params),
            **mlflow_log.standard_tags(plan.git_commit), "mlflow.note.content": note(plan)}
    plan = dataclasses.replace(plan, parent_run_id=mlflow_log.start_parent(
        plan.tracking_uri, plan.experiment_id, plan.name, tags, {**settings, **fixed}))
    cfg = plan.base_config
    mlflow_log.log_dataset(plan.tracking_uri, plan.parent_run_id, plan.dataset, plan.data_checksum, cfg.data_root,
                           split_profile(cfg))
    plan.save()
    P.copy_space(plan)
    return plan


def lock_folder(plan: P.SearchPlan) -> Path:
    """Where the driver's lock lives: the search's folder; for object storage (which has no
    OS locks) a folder on this machine, so that a second driver here is refused."""
    if plan.storage.local:
        return Path(plan.experiment_path)
    return Path.home() / ".cache" / "spmi-tune" / "locks" / plan.name


def note(plan: P.SearchPlan) -> str:
    """The parent run's description (markdown): the command line and the search space."""
    storage = plan.storage
    text = (storage.read_text(plan.name, P.SPACE_COPY) if storage.is_file(plan.name, P.SPACE_COPY)
            else plan.space().to_yaml())
    return (f"Search `{plan.name}`: {plan.method} on {plan.dataset}, {plan.num_samples} trials of up to "
            f"{plan.max_epochs} epochs (ASHA grace {plan.grace_period}).\n\n```\n{plan.command}\n```\n\n"
            f"Space `{plan.space_path}`:\n\n```yaml\n{text.rstrip()}\n```\n")


def main(argv: list[str] | None = None) -> int:
    apply_environment()
    args = build_parser().parse_args(argv)
    if args.storage_endpoint and args.storage_path.startswith("s3://"):
        # MLflow's S3 artifact client (an embedded store's artifacts) reads this one
        os.environ.setdefault("MLFLOW_S3_ENDPOINT_URL", args.storage_endpoint)
    from tuning.plan import cost
    try:
        budget = cost.parse_duration(args.time_budget) if args.time_budget else None
        plan, resumed = prepare(args)
        if not resumed:
            plan = dataclasses.replace(plan, command=secrets.mask(command() + " " + shlex.join(
                sys.argv[1:] if argv is None else argv)))
        lock = SearchLock(lock_folder(plan), plan.name).acquire()  # one driver per search
    except (ValueError, DataError) as err:
        print(f"error: {secrets.mask(str(err))}", file=sys.stderr)
        return 2
    with lock:
        if not resumed and plan.storage.is_file(plan.name, P.PLAN_FILE):  # another driver started it meanwhile
            print(f"error: a search named {plan.name} now exists under {plan.storage_path}; continue it with "
                  f"--resume, or give another --name", file=sys.stderr)
            return 2
        if resumed:
            plan.save()  # where its study is now (a moved folder or database)
        else:
            try:
                plan = start_tracking(plan)
            except Exception as err:  # MLflow raises its own types
                print(secrets.mask(f"error: could not set up MLflow at {plan.tracking_uri}: {err}"), file=sys.stderr)
                return 2
        if plan.gpus_per_trial == 0 and plan.workers_per_trial == 1:  # GPUs: the running estimate only
            print("\n".join(cost.start_message(plan, cost.core_matmul_flops())), flush=True)
        from tuning.driver.runner import run_search
        return run_search(plan, resumed, args.address, budget, args.forward_secrets)


