"""The search's Optuna study: an RDB storage (SQLite beside the search by default), the
TPE settings and warm starts from an earlier study (the searcher that asks and tells it
during a search: ``tuning.driver.searcher``). Optuna's public interface only."""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from tuning.record import secrets

STORAGE_FILE = "optuna.db"
# user attributes of a study's trials: the index of the search's point it evaluates (an
# enqueued point), the trial a rerun continues, the earlier study's trial a warm start copied
POINT_ATTR, RERUN_ATTR, WARM_ATTR = "point_to_evaluate", "rerun_of", "warm_start_from"


@dataclass(frozen=True)
class DataProtocol:
    """The data a search's trials were trained and judged on (beyond the dataset): the
    split's sizes, the flipping probability, what the validation images' labels are."""

    labelled: int
    partial_rate: float
    val_size: int
    unlabelled_size: int | None   # None: every unlabelled image
    val_labels: str
    val_from_labelled: int
    include_labelled: bool        # the unlabelled set includes the labelled images


PROTOCOL = tuple(f.name for f in dataclasses.fields(DataProtocol))


@dataclass(frozen=True)
class StudyAttrs:
    """What a search's study records about it (its user attributes, the protocol's fields
    among them): a warm start checks that the earlier study's method, dataset, metric, mode
    and data protocol agree, and judges its trials at this search's ``max_epochs``."""

    method: str
    dataset: str
    metric: str
    mode: str
    max_epochs: int
    protocol: DataProtocol | None = None

    def user_attrs(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "protocol"}
        return out | (dataclasses.asdict(self.protocol) if self.protocol is not None else {})


def default_storage(storage_path: str) -> str:
    """``sqlite:///<storage_path>/optuna.db``: every search under a storage path, one study each.
    Object storage cannot hold an SQLite database: there the study lives in this driver's
    ``~/.cache/spmi-tune/`` (use ``--optuna-storage`` for a database every driver reaches)."""
    from pathlib import Path
    if "://" in storage_path:
        folder = Path.home() / ".cache" / "spmi-tune"
        folder.mkdir(parents=True, exist_ok=True)
        return "sqlite:///" + str(folder / STORAGE_FILE)
    return "sqlite:///" + str(Path(storage_path).resolve() / STORAGE_FILE)


@dataclass(frozen=True)
class TpeSettings:
    """The TPESampler's arguments, explicit (Optuna's defaults change between versions).
    ``n_startup_trials`` counts the random trials the sampler itself proposes; ``seeded`` are
    the study's trials it did not propose (enqueued points, warm-started trials), which
    Optuna's start-up count would include: the sampler is given the sum."""

    multivariate: bool
    group: bool
    constant_liar: bool
    n_startup_trials: int
    n_ei_candidates: int
    seed: int
    seeded: int = 0


def tpe_settings(num_samples: int, max_concurrent: int | None, seed: int, seeded: int = 0) -> TpeSettings:
    """Explicit TPE settings: multivariate (the searched values interact), grouped for
    conditional spaces, constant liar when trials run at once, random start-up trials
    scaled to the budget (a quarter of the trials, 2 to 10) on top of the ``seeded`` ones
    (enqueued points, warm-started trials), seeded."""
    concurrent = max_concurrent is None or max_concurrent > 1  # None: as many as the resources allow
    return TpeSettings(multivariate=True, group=True, constant_liar=concurrent,
                       n_startup_trials=max(2, min(10, num_samples // 4)), n_ei_candidates=24, seed=int(seed),
                       seeded=int(seeded))


def make_sampler(settings: TpeSettings) -> optuna.samplers.TPESampler:
    """The TPESampler of ``settings``: its start-up count is the random trials plus the seeded ones."""
    kwargs = dataclasses.asdict(settings)
    kwargs["n_startup_trials"] += kwargs.pop("seeded")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # ``group``
        return optuna.samplers.TPESampler(**kwargs)


def make_proposer(kind: str, tpe: TpeSettings, seed: int, grid: dict[str, list[Any]] | None = None,
                  ) -> optuna.samplers.BaseSampler:
    """The sampler of ``--searcher``: ``tpe`` (``make_sampler``), ``random`` or ``grid``
    (every point of ``grid`` once, in a seeded order)."""
    if kind == "tpe":
        return make_sampler(tpe)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind == "grid":
        if not grid:
            raise ValueError("--searcher grid needs the space's explicit values")
        return optuna.samplers.GridSampler(grid, seed=seed)
    raise ValueError(f"--searcher {kind}: choose tpe, random or grid")


def dashboard_hint(url: str, name: str) -> str:
    return f"Optuna study {name!r}: optuna-dashboard {url}"


def storage(url: str) -> optuna.storages.RDBStorage:
    """The RDB storage at ``url`` (ValueError, one line, when unusable)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if url.startswith("sqlite:///"):
        from pathlib import Path
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=_engine_kwargs(url))
    except Exception as err:  # SQLAlchemy / driver errors
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        hint = "; install its driver (e.g. pip install psycopg2-binary)" if "No module named" in first else ""
        raise ValueError(f"Optuna storage {secrets.mask(url)} is not usable: {first}{hint}") from None


def _engine_kwargs(url: str) -> dict[str, Any]:
    # the driver is the only writer, but a dashboard may read: wait instead of "database is locked"
    return {"connect_args": {"timeout": 30}} if url.startswith("sqlite") else {"pool_pre_ping": True}


def study_exists(url: str, name: str) -> bool:
    """Whether ``url`` holds study ``name`` (an SQLite file that is not there: no, and none is made)."""
    if url.startswith("sqlite:///"):
        from pathlib import Path
        if not Path(url[len("sqlite:///"):]).is_file():
            return False
    return any(s.study_name == name for s in optuna.get_all_study_summaries(storage(url)))


def create_study(url: str, name: str, mode: str, attrs: StudyAttrs) -> optuna.Study:
    """A new study ``name`` (ValueError when it exists) with ``attrs`` as user attributes."""
    if study_exists(url, name):
        raise ValueError(f"the Optuna storage {url} already has a study named {name!r}; choose another --name")
    study = optuna.create_study(storage=storage(url), study_name=name,
                                direction="maximize" if mode == "max" else "minimize")
    for key, value in attrs.user_attrs().items():
        study.set_user_attr(key, value)
    return study


@dataclass(frozen=True)
class WarmStartCheck:
    """What ``check_warm_start`` found: the usable trials, and the protocol fields the
    earlier study does not record (a study made before they were), so unchecked."""

    trials: int
    unchecked: tuple[str, ...] = ()


def check_warm_start(url: str, source: str, attrs: StudyAttrs) -> WarmStartCheck:
    """Whether study ``source`` can seed a search with ``attrs`` (ValueError, one line,
    naming the first difference: method, dataset, metric, mode or data protocol)."""
    if not study_exists(url, source):
        raise ValueError(f"--warm-start {source}: no study of that name in {url}")
    old = optuna.load_study(study_name=source, storage=storage(url))
    ours = attrs.user_attrs()
    for key in ("method", "dataset", "metric", "mode", *PROTOCOL):
        if key in old.user_attrs and key in ours and old.user_attrs[key] != ours[key]:
            why = "; its trials were trained and judged on other data" if key in PROTOCOL else ""
            raise ValueError(f"--warm-start {source}: that search has {key} {old.user_attrs[key]!r}, "
                             f"this one {ours[key]!r}{why}")
    done = [t for t in old.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    if not done:
        raise ValueError(f"--warm-start {source}: that study has no evaluated (COMPLETE or PRUNED) trial")
    return WarmStartCheck(len(done), tuple(k for k in PROTOCOL if k not in old.user_attrs))


def warm_start(study: optuna.Study, url: str, source: str, distributions: dict[str, Any],
               max_epochs: int, score: Callable[[dict[int, float]], float] | None = None) -> tuple[int, int]:
    """Copy the evaluated trials of study ``source`` into ``study``, judged at this search's
    budget: a trial that reached ``max_epochs`` is COMPLETE with its score over the epochs up
    to it (``score``: this search's epoch rule, ``tuning.plan.selection``; default its best
    value), an earlier-ended one PRUNED with its intermediate values. Trials outside this
    space are skipped. Returns (copied, skipped)."""
    old = optuna.load_study(study_name=source, storage=storage(url))
    copied = skipped = 0
    for t in old.trials:
        if t.state not in (TrialState.COMPLETE, TrialState.PRUNED):
            continue
        if not _inside(t.params, distributions):
            skipped += 1
            continue
        steps = {s: v for s, v in t.intermediate_values.items() if s <= max_epochs}
        if steps and max(steps) >= max_epochs:
            state, value = TrialState.COMPLETE, (score(steps) if score is not None
                                                 else best_of(steps.values(), study.direction))
        elif steps:
            state, value = TrialState.PRUNED, None
        elif t.state == TrialState.COMPLETE and old.user_attrs.get("max_epochs", -1) == max_epochs:
            state, value = TrialState.COMPLETE, t.value  # no intermediate values, same budget
        else:
            skipped += 1
            continue
        study.add_trial(optuna.trial.create_trial(
            params=t.params, distributions=distributions, value=value, state=state, intermediate_values=steps,
            user_attrs={**t.user_attrs, WARM_ATTR: f"{source}#{t.number}"}))
        copied += 1
    return copied, skipped


def _inside(params: dict[str, Any], distributions: dict[str, Any]) -> bool:
    return set(params) == set(distributions) and all(within(distributions[k], v) for k, v in params.items())


def within(distribution: Any, value: Any) -> bool:
    """Whether ``value`` (as a trial's ``params`` hold it) can be drawn from ``distribution``:
    a choice of a categorical one, else inside [low, high] on its step grid."""
    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        return value in distribution.choices
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return False
    if not distribution.low <= value <= distribution.high:
        return False
    if distribution.step is None:
        return True
    k = (value - distribution.low) / distribution.step
    return abs(k - round(k)) < 1e-8


def best_of(values: Any, direction: optuna.study.StudyDirection) -> float:
    """The best finite value in the study's direction."""
    values = [v for v in values if math.isfinite(v)]
    return max(values) if direction == optuna.study.StudyDirection.MAXIMIZE else min(values)


def trial_states(url: str, name: str) -> dict[str, int]:
    """``{state name: count}`` of the study's trials."""
    study = optuna.load_study(study_name=name, storage=storage(url))
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts


def fail_running(url: str, name: str) -> int:
    """Mark the study's still-RUNNING trials FAIL (the search is over, nothing runs)."""
    study = optuna.load_study(study_name=name, storage=storage(url))
    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(t.number, state=TrialState.FAIL)
        n += 1
    return n
