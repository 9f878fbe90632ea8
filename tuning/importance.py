"""Hyperparameter importance with Optuna's fANOVA, from a table of finished trials."""

from __future__ import annotations

import math

import pandas as pd

from tuning.spaces import SearchSpace


def fanova(table: pd.DataFrame, space: SearchSpace, value: str = "val_acc",
           seed: int = 0) -> tuple[dict[str, float], str]:
    """``({param: importance}, "")``, or ``({}, reason)`` when it cannot be computed."""
    import optuna
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows = table[table[value].notna()] if value in table else table.iloc[0:0]
    if len(rows) < 2:
        return {}, f"needs at least 2 trials with a {value}; have {len(rows)}"
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
    if len(study.trials) < 2:
        return {}, "needs at least 2 trials with every searched value"
    try:
        return dict(get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=seed))), ""
    except Exception as err:  # e.g. every trial has the same value
        return {}, f"fANOVA failed: {err}"
