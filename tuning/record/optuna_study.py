"""The search's Optuna study: an RDB storage (SQLite beside the search by default), the
TPE settings, warm starts from an earlier study, and ``AshaOptunaSearch``, which tells
Optuna what happened to each trial.

Ray's ``OptunaSearch`` reports every epoch at ``training_iteration`` (which restarts after
some restores), never reports the result on which ASHA stops a trial, and tells a stopped
trial COMPLETE with its partial accuracy, so TPE takes a 5-epoch score for a 500-epoch
one. Here every epoch's metric is an intermediate value at step ``epoch``; a trial that
ends before ``max_epochs`` is PRUNED (Optuna keeps its last intermediate value as its
value), one that reaches it is COMPLETE with its best epoch's metric (the checkpoint it
leaves behind), an errored one FAIL.
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from tuning.plan.settings import TIME_ATTR

log = logging.getLogger(__name__)
STORAGE_FILE = "optuna.db"
# study user attributes: what a warm start checks
STUDY_ATTRS = ("method", "dataset", "metric", "mode", "max_epochs")


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


def tpe_settings(num_samples: int, max_concurrent: int | None, seed: int) -> dict[str, Any]:
    """Explicit TPE settings: multivariate (the searched values interact), grouped for
    conditional spaces, constant liar when trials run at once, random start-up trials
    scaled to the budget (a quarter of the trials, 2 to 10), seeded."""
    concurrent = max_concurrent is None or max_concurrent > 1  # None: as many as the resources allow
    return {"multivariate": True, "group": True, "constant_liar": concurrent,
            "n_startup_trials": max(2, min(10, num_samples // 4)), "n_ei_candidates": 24, "seed": int(seed)}


def make_sampler(settings: dict[str, Any]) -> optuna.samplers.TPESampler:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # ``group``
        return optuna.samplers.TPESampler(**settings)


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
        raise ValueError(f"Optuna storage {url} is not usable: {first}{hint}") from None


def _engine_kwargs(url: str) -> dict[str, Any]:
    # the driver is the only writer, but a dashboard may read: wait instead of "database is locked"
    return {"connect_args": {"timeout": 30}} if url.startswith("sqlite") else {"pool_pre_ping": True}


def study_exists(url: str, name: str) -> bool:
    return any(s.study_name == name for s in optuna.get_all_study_summaries(storage(url)))


def create_study(url: str, name: str, mode: str, attrs: dict[str, Any]) -> optuna.Study:
    """A new study ``name`` (ValueError when it exists) with ``attrs`` as user attributes."""
    if study_exists(url, name):
        raise ValueError(f"the Optuna storage {url} already has a study named {name!r}; choose another --name")
    study = optuna.create_study(storage=storage(url), study_name=name,
                                direction="maximize" if mode == "max" else "minimize")
    for key, value in attrs.items():
        study.set_user_attr(key, value)
    return study


def check_warm_start(url: str, source: str, attrs: dict[str, Any]) -> int:
    """Whether study ``source`` can seed a search with ``attrs``; its usable trial count."""
    if not study_exists(url, source):
        raise ValueError(f"--warm-start {source}: no study of that name in {url}")
    old = optuna.load_study(study_name=source, storage=storage(url))
    for key in ("method", "dataset", "metric", "mode"):
        if key in old.user_attrs and old.user_attrs[key] != attrs[key]:
            raise ValueError(f"--warm-start {source}: that search has {key} {old.user_attrs[key]!r}, "
                             f"this one {attrs[key]!r}")
    done = [t for t in old.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    if not done:
        raise ValueError(f"--warm-start {source}: that study has no evaluated (COMPLETE or PRUNED) trial")
    return len(done)


def warm_start(study: optuna.Study, url: str, source: str, distributions: dict[str, Any],
               max_epochs: int) -> tuple[int, int]:
    """Copy the evaluated trials of study ``source`` into ``study``, judged at this search's
    budget: a trial that reached ``max_epochs`` is COMPLETE with its best value up to that
    epoch, an earlier-ended one PRUNED with its intermediate values. Trials outside this
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
            state, value = TrialState.COMPLETE, _best(steps.values(), study.direction)
        elif steps:
            state, value = TrialState.PRUNED, None
        elif t.state == TrialState.COMPLETE and old.user_attrs.get("max_epochs", -1) == max_epochs:
            state, value = TrialState.COMPLETE, t.value  # no intermediate values, same budget
        else:
            skipped += 1
            continue
        study.add_trial(optuna.trial.create_trial(
            params=t.params, distributions=distributions, value=value, state=state, intermediate_values=steps,
            user_attrs={**t.user_attrs, "warm_start_from": f"{source}#{t.number}"}))
        copied += 1
    return copied, skipped


def _inside(params: dict[str, Any], distributions: dict[str, Any]) -> bool:
    if set(params) != set(distributions):
        return False
    try:
        return all(distributions[k]._contains(distributions[k].to_internal_repr(v)) for k, v in params.items())
    except (ValueError, TypeError):
        return False


def _best(values: Any, direction: optuna.study.StudyDirection) -> float:
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
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        n += 1
    return n


class AshaOptunaSearch(OptunaSearch):
    """``OptunaSearch`` that tells Optuna the truth about each trial (module docstring).

    Intermediate values are keyed by ``epoch`` (epochs completed), so a resumed trial
    re-reporting an epoch is not counted twice; ``max_epochs`` separates PRUNED from
    COMPLETE. Its state (the study with its RDB URL, the sampler with its RNG, the
    trial map) is pickled by Tune with the experiment and restored on resume."""

    def __init__(self, *args: Any, max_epochs: int, **kwargs: Any):
        self._max_epochs = int(max_epochs)
        super().__init__(*args, **kwargs)

    def _report(self, trial_id: str, result: dict[str, Any]) -> None:
        value, step = result.get(self.metric), result.get(TIME_ATTR)
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is None or value is None or step is None or not math.isfinite(float(value)):
            return
        frozen = self._ot_study._storage.get_trial(ot_trial._trial_id)
        if frozen.state.is_finished() or int(step) in frozen.intermediate_values:
            return
        ot_trial.report(float(value), int(step))

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if trial_id not in self._completed_trials:
            self._report(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        self._completed_trials.add(trial_id)
        ot_trial = self._ot_trials[trial_id]
        if result and not error:
            self._report(trial_id, result)  # Tune does not pass the stopping result to on_trial_result
        frozen = self._ot_study._storage.get_trial(ot_trial._trial_id)
        if frozen.state.is_finished():  # told by a driver before a restore
            return
        steps = frozen.intermediate_values
        epochs = int((result or {}).get(TIME_ATTR, max(steps, default=0)))
        if error or not steps:
            state, value = TrialState.FAIL, None
        elif epochs < self._max_epochs:
            state, value = TrialState.PRUNED, None
        else:
            state, value = TrialState.COMPLETE, _best(steps.values(), self._ot_study.direction)
        try:
            self._ot_study.tell(ot_trial, value, state=state)
        except Exception as exc:  # never stop the search over the study
            log.warning("could not tell Optuna about trial %s: %s", trial_id, exc)

    def restore(self, checkpoint_path: str) -> None:
        """Restore, then FAIL the study's RUNNING trials that no restored trial owns: a
        killed driver asked for them after its last snapshot; Tune asks anew."""
        super().restore(checkpoint_path)
        owned = {t._trial_id for t in self._ot_trials.values()}
        storage_ = self._ot_study._storage
        for t in self._ot_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t._trial_id not in owned:
                storage_.set_trial_state_values(t._trial_id, TrialState.FAIL)
