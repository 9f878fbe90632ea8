"""Hyperparameter importance at a common budget, with Optuna's fANOVA and PED-ANOVA.

Final accuracies of an ASHA search mix trials trained for the grace period with trials
trained to the end, so importance is computed on two bases that compare like with like:
``val/acc`` at the grace period (an epoch every trial that was not lost to an error
reached) and the best ``val/acc`` of the trials that ran all epochs. Each result states
the number of trials it rests on and is flagged when that is below ``MIN_TRIALS``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import pandas as pd

from tuning.plan.settings import METRIC, TIME_ATTR
from tuning.plan.spaces import SearchSpace

MIN_TRIALS = 10   # below this many trials an importance means little (flagged in the report)
EVALUATORS = ("fANOVA", "PED-ANOVA")


@dataclass
class Importance:
    basis: str                      # what value the trials are compared on
    evaluator: str                  # fANOVA or PED-ANOVA
    n_trials: int
    values: dict[str, float] = field(default_factory=dict)
    note: str = ""                  # why it is missing, or the warning about too few trials

    @property
    def key(self) -> str:
        return ("finished" if self.basis.startswith("best ") else "grace") + "/" + self.evaluator


def _evaluator(name: str, n: int, seed: int):
    from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator
    if name == "fANOVA":
        return FanovaImportanceEvaluator(seed=seed)
    # PED-ANOVA asks for at least ~5 trials in the top quantile: 10 % from 50 trials on
    return PedAnovaImportanceEvaluator(target_quantile=0.1 if n >= 50 else 0.25)


def evaluate(rows: pd.DataFrame, space: SearchSpace, value: str, evaluator: str = "fANOVA",
             seed: int = 0) -> tuple[dict[str, float], int, str]:
    """``(importances, trials used, note)`` of ``rows`` (one per trial: searched values and
    ``value``); empty importances with the reason in ``note`` when not computable."""
    import optuna
    from optuna.importance import get_param_importances
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows = rows[rows[value].notna()] if value in rows else rows.iloc[0:0]
    dists = space.distributions()
    study = optuna.create_study(direction="maximize")
    for _, row in rows.iterrows():
        params = {}
        for name, p in space.params.items():
            v = row.get(name)
            if v is None or (isinstance(v, float) and math.isnan(v)):
                break
            params[name] = int(v) if p.distribution in ("int", "logint") else v
        else:
            study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=float(row[value])))
    n = len(study.trials)
    if n < 2:
        return {}, n, f"needs at least 2 trials with a {value} and every searched value; have {n}"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = dict(get_param_importances(study, evaluator=_evaluator(evaluator, n, seed)))
        except Exception as err:  # e.g. every trial has the same value
            return {}, n, f"{evaluator} failed: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
    notes = [str(w.message).splitlines()[0] for w in caught if "Experimental" not in type(w.message).__name__]
    return result, n, "; ".join(notes)


def fanova(table: pd.DataFrame, space: SearchSpace, value: str = "val_acc",
           seed: int = 0) -> tuple[dict[str, float], str]:
    """``({param: importance}, "")``, or ``({}, reason)`` when it cannot be computed."""
    values, _, note = evaluate(table, space, value, "fANOVA", seed)
    return values, "" if values else note


def at_common_budget(table: pd.DataFrame, history: pd.DataFrame, space: SearchSpace, grace_period: int,
                     max_epochs: int, seed: int = 0, metric: str = METRIC) -> list[Importance]:
    """fANOVA and PED-ANOVA on (a) the search's ``metric`` at epoch ``grace_period`` of every
    trial that reached it, (b) its best value (``best_score``) of the trials that ran all
    ``max_epochs`` epochs."""
    params = list(space.params)
    grace = pd.DataFrame(columns=[*params, "value"])
    if not history.empty and TIME_ATTR in history and metric in history and not table.empty:
        at = history[history[TIME_ATTR] == grace_period][["trial_id", metric]].rename(columns={metric: "value"})
        grace = at.merge(table[["trial_id", *params]], on="trial_id")
    finished = (table[table["epochs"] >= max_epochs].rename(columns={"best_score": "value"})
                if not table.empty else grace.iloc[0:0])
    bases = [(f"{metric} at epoch {grace_period} (the grace period; every trial that reached it)", grace),
             (f"best {metric} of the trials that ran all {max_epochs} epochs", finished)]
    out = []
    for basis, rows in bases:
        for name in EVALUATORS:
            values, n, note = evaluate(rows, space, "value", name, seed)
            if values and n < MIN_TRIALS:
                note = "; ".join(x for x in (f"only {n} trials: too few for the importance to mean much "
                                             f"(want >= {MIN_TRIALS})", note) if x)
            out.append(Importance(basis, name, n, values, note))
    return out
