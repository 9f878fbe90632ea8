"""The search's searcher: Optuna TPE behind Ray Tune's ``Searcher`` hooks, asked and told
only through Optuna's public interface (``Study.ask``/``tell``/``enqueue_trial`` and the
storage API of the study's own ``RDBStorage``).

Ray's ``OptunaSearch`` reports every epoch at ``training_iteration`` (which restarts after
some restores), never reports the result on which ASHA stops a trial, and tells a stopped
trial COMPLETE with its partial accuracy, so TPE takes a 5-epoch score for a 500-epoch
one. Here every epoch's metric is an intermediate value at step ``epoch``; a trial that
ends before ``max_epochs`` is PRUNED (Optuna keeps its last intermediate value as its
value), one that reaches it is COMPLETE with its score under the search's epoch rule (its
best epoch's metric, the network it keeps, or its last epoch's: ``tuning.plan.selection``),
so that Optuna's best trial is the report's; an errored one FAIL.

Resume neither forgets nor repeats. Optuna cannot change a finished trial's state, so a
trial Tune runs again after it was told FAIL (``resume_errored`` on ``--resume``, or a
trial whose end reached the study after Tune's last snapshot) continues as a new Optuna
trial: the same params, the FAIL trial's intermediate values before the epoch the rerun
resumes at, user attribute ``rerun_of`` = the FAIL trial's number; that new trial ends in
the state of the rerun (the FAIL one stays, a record of the failed run; TPE ignores it).
Before a driver's first ask (at once for a new searcher or a restored one, else at its first
``suggest``: Tune restarts a run killed before its first snapshot from ``tuner.pkl`` without
a searcher state) the study's RUNNING trials that no Tune trial of this run owns are told
FAIL (a killed driver asked for them; Tune asks anew), and each point to evaluate is
enqueued unless the study holds it waiting, evaluated (COMPLETE or PRUNED) or owned: a point
whose run was lost runs again, none runs twice.
"""

from __future__ import annotations

import logging
import math
import pickle
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher

from tuning.plan.selection import DEFAULT_EPOCH_RULE, Selection
from tuning.plan.settings import TIME_ATTR
from tuning.record import optuna_study, secrets
from tuning.record.optuna_study import POINT_ATTR, RERUN_ATTR, WARM_ATTR

log = logging.getLogger(__name__)
STATE_VERSION = 1  # of what ``save`` writes (searcher-state-*.pkl in the experiment folder)
_STUDY_URLS: dict[str, str] = {}  # study name -> where this driver finds it (``use_study_url``)


def use_study_url(name: str, url: str) -> None:
    """Where this driver finds study ``name`` now (the plan's URL, read where the plan was
    found): a searcher Tune unpickles from ``tuner.pkl`` after the search folder moved, or
    after ``--optuna-storage`` moved the study, opens it there, not where it was built."""
    _STUDY_URLS[name] = url


class AshaOptunaSearch(Searcher):
    """TPE on the search's persistent study (module docstring).

    ``space`` is a define-by-run function that calls ``trial.suggest_*`` for every searched
    name; ``points_to_evaluate`` are enqueued (user attribute ``point_to_evaluate``: their
    index) once per search, not once per driver. Intermediate values are keyed by ``epoch``
    (epochs completed), so a resumed trial re-reporting an epoch is not counted twice;
    ``max_epochs`` separates PRUNED from COMPLETE. What Tune saves with the experiment
    (``save``/``restore``, and the pickle in ``tuner.pkl``) is the map of Tune trial ids to
    Optuna trial numbers and the sampler with its RNG; the study itself lives in its database."""

    def __init__(self, space: Callable[[Any], Any], metric: str, mode: str, storage_url: str, study_name: str,
                 sampler: optuna.samplers.BaseSampler, max_epochs: int,
                 points_to_evaluate: list[dict[str, Any]] | None = None, epoch_rule: str = DEFAULT_EPOCH_RULE):
        super().__init__(metric=metric, mode=mode)
        self._space, self._url, self._name = space, storage_url, study_name
        self._max_epochs = int(max_epochs)
        self._selection = Selection(epoch_rule, self._max_epochs)
        self._points = [dict(p) for p in points_to_evaluate or []]
        self._numbers: dict[str, int] = {}     # Tune trial id -> Optuna trial number
        self._told: set[str] = set()           # Tune trial ids whose end Optuna was told
        self._open(sampler)
        self._reconcile()                      # a new searcher: a fresh Tune run owns nothing yet

    def _open(self, sampler: optuna.samplers.BaseSampler) -> None:
        self._db = optuna_study.storage(self._url)
        self.study = optuna.load_study(study_name=self._name, storage=self._db, sampler=sampler,
                                       pruner=optuna.pruners.NopPruner())
        self._study_id = self._db.get_study_id_from_name(self._name)
        self._reconciled = False               # per driver process (``_reconcile``)

    @property
    def sampler(self) -> optuna.samplers.BaseSampler:
        return self.study.sampler

    # ------------------------------------------------------------ pickling (tuner.pkl)

    def __getstate__(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k not in ("study", "_db", "_study_id", "_reconciled")}
        state["_sampler"] = self.sampler
        state["_url"] = secrets.mask(self._url)  # tuner.pkl is in the search's folder: no password there
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        sampler = state.pop("_sampler")
        state.setdefault("_points", [])  # pickled before points were kept
        self.__dict__.update(state)
        if "_selection" not in state:  # pickled before the epoch rule: the best epoch's metric
            self._selection = Selection(DEFAULT_EPOCH_RULE, self._max_epochs)
        self._url = _STUDY_URLS.get(self._name, self._url)
        if secrets.is_masked(self._url):  # the database client's own password ($PGPASSWORD, ~/.pgpass)
            self._url = secrets.without_password(self._url)
        self._open(sampler)

    # ------------------------------------------------------------ Tune's hooks

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        """The space is given to the constructor (define-by-run): nothing to take from Tune."""
        return False

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if not self._reconciled:
            self._reconcile()
        trial = self.study.ask()
        self._numbers[trial_id] = trial.number
        out = self._space(trial)
        params = dict(trial.params)
        return {**params, **out} if isinstance(out, dict) else params

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        self._continue_failed(trial_id, result)
        if trial_id not in self._told:
            self._report(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        if trial_id not in self._numbers:
            return
        if result and not error:
            self._continue_failed(trial_id, result)  # a rerun whose only result is the stopping one
        if trial_id in self._told:
            return
        self._told.add(trial_id)
        if result and not error:
            self._report(trial_id, result)  # Tune does not pass the stopping result to on_trial_result
        _, frozen = self._frozen(trial_id)
        if frozen.state.is_finished():  # told by a driver before a restore
            return
        steps = frozen.intermediate_values
        epochs = int((result or {}).get(TIME_ATTR, max(steps, default=0)))
        if error or not steps:
            state, value = TrialState.FAIL, None
        elif epochs < self._max_epochs:
            state, value = TrialState.PRUNED, None
        else:
            maximize = self.study.direction == optuna.study.StudyDirection.MAXIMIZE
            state, value = TrialState.COMPLETE, self._selection.value(steps, maximize)
        try:
            self.study.tell(frozen.number, value, state=state)
        except Exception as exc:  # never stop the search over the study
            log.warning("could not tell Optuna about trial %s: %s", trial_id, exc)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump({"version": STATE_VERSION, "numbers": self._numbers, "told": self._told,
                         "sampler": self.sampler}, f)

    def restore(self, checkpoint_path: str) -> None:
        """The state of Tune's last snapshot, then ``_reconcile`` against the trials it owns."""
        with open(checkpoint_path, "rb") as f:
            state = pickle.load(f)
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise ValueError(f"{checkpoint_path} is not the state of this searcher (version {STATE_VERSION}); "
                             f"the search was started by another layout of tuning/")
        self._numbers, self._told = dict(state["numbers"]), set(state["told"])
        self._open(state["sampler"])
        self._reconcile()

    # ------------------------------------------------------------ the study's records

    def _reconcile(self) -> None:
        """Make the study agree with this Tune run (module docstring): FAIL the RUNNING trials
        it does not own, enqueue the points it neither holds waiting, evaluated nor owns."""
        owned = set(self._numbers.values())
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.number not in owned:
                self.study.tell(t.number, state=TrialState.FAIL)
        kept = {t.user_attrs[POINT_ATTR] for t in self.study.get_trials(deepcopy=False)
                if POINT_ATTR in t.user_attrs and WARM_ATTR not in t.user_attrs
                and (t.number in owned or t.state in (TrialState.WAITING, TrialState.COMPLETE, TrialState.PRUNED))}
        for index, point in enumerate(self._points):
            if index not in kept:
                self.study.enqueue_trial(point, user_attrs={POINT_ATTR: index})
        self._reconciled = True

    def _frozen(self, trial_id: str) -> tuple[int, optuna.trial.FrozenTrial]:
        """The trial's storage id and the trial as its database holds it now (after a restore too)."""
        key = self._db.get_trial_id_from_study_id_trial_number(self._study_id, self._numbers[trial_id])
        return key, self._db.get_trial(key)

    def _continue_failed(self, trial_id: str, result: dict[str, Any]) -> None:
        """A result of a trial Optuna was told FAIL: Tune runs it again, so it continues as a
        new RUNNING Optuna trial with the same params and the FAIL trial's values before this
        result's epoch (where the rerun resumed); the Tune trial's end is told to that one."""
        if trial_id not in self._numbers:
            return
        _, frozen = self._frozen(trial_id)
        if frozen.state != TrialState.FAIL:
            return
        step = result.get(TIME_ATTR)
        kept = {s: v for s, v in frozen.intermediate_values.items() if step is None or s < int(step)}
        rerun = optuna.trial.create_trial(state=TrialState.RUNNING, params=frozen.params,
                                          distributions=frozen.distributions, intermediate_values=kept,
                                          user_attrs={**frozen.user_attrs, RERUN_ATTR: frozen.number})
        key = self._db.create_new_trial(self._study_id, template_trial=rerun)
        self._numbers[trial_id] = self._db.get_trial_number_from_id(key)
        self._told.discard(trial_id)

    def _report(self, trial_id: str, result: dict[str, Any]) -> None:
        """One epoch's metric as the intermediate value at step ``epoch`` (once per step)."""
        value, step = result.get(self.metric), result.get(TIME_ATTR)
        if trial_id not in self._numbers or value is None or step is None or not math.isfinite(float(value)):
            return
        key, frozen = self._frozen(trial_id)
        if frozen.state.is_finished() or int(step) in frozen.intermediate_values:
            return
        self._db.set_trial_intermediate_value(key, int(step), float(value))
