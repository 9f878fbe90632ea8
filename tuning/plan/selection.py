"""The one definition of a search's selected configuration, used by the report, the MLflow
parent run, the published model, Optuna's best trial, the confirmation and the paper table.

A trial's score is the search's validation metric (``val/acc``, or a partial-label one:
``val/covering_rate``, ``val/approx_acc``) under its **epoch rule**: ``best``, the highest
value of any epoch (the network the trial keeps, ``tuning.trial.best``), or ``last``, the
value of its final epoch. Trials are compared at the full budget: a
trial that reached ``max_epochs`` always ranks above one ASHA stopped earlier, and stopped
trials rank by the rung they reached, then by score (ASHA's own order). Failed and diverged
trials are never selected. Ties go to the earlier trial (its id)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd

EPOCH_RULES = ("best", "last")
DEFAULT_EPOCH_RULE = "best"
GOOD_STATUSES = ("finished", "stopped")   # trials that ended well (the rest: error, diverged, running)


def check_rule(rule: str) -> str:
    if rule not in EPOCH_RULES:
        raise ValueError(f"epoch rule {rule!r}: choose one of {', '.join(EPOCH_RULES)}")
    return rule


@dataclass(frozen=True)
class Selection:
    """How a search selects its configuration: ``metric`` under the epoch rule at ``max_epochs``."""

    rule: str
    max_epochs: int
    metric: str = "val/acc"

    def __post_init__(self) -> None:
        check_rule(self.rule)

    @property
    def score_column(self) -> str:
        """The trials-table column holding a trial's score (the metric at the rule's epoch)."""
        return "best_score" if self.rule == "best" else "score"

    @property
    def test_column(self) -> str:
        """The trials-table column holding the test accuracy of the network the rule selects."""
        return "best_test_acc" if self.rule == "best" else "test_acc"

    def value(self, steps: dict[int, float], maximize: bool = True) -> float:
        """A trial's score from its validation values by epoch (Optuna's intermediate values)."""
        if not steps:
            return math.nan
        if self.rule == "last":
            return float(steps[max(steps)])
        return float(max(steps.values()) if maximize else min(steps.values()))

    def rank(self, table: pd.DataFrame) -> pd.DataFrame:
        """The trials that ended well, best first (module docstring), with ``full_budget``
        (reached ``max_epochs``) and ``selection_score`` columns."""
        if table.empty:
            return table.assign(full_budget=pd.Series(dtype=bool), selection_score=pd.Series(dtype=float))
        done = table[table["status"].isin(GOOD_STATUSES) & table[self.score_column].notna()].copy()
        done["full_budget"] = done["epochs"] >= self.max_epochs
        done["selection_score"] = done[self.score_column].astype(float)
        return done.sort_values(["full_budget", "epochs", "selection_score", "trial_id"],
                                ascending=[False, False, False, True]).reset_index(drop=True)

    def best(self, table: pd.DataFrame) -> pd.Series | None:
        """The selected trial's row (None when no trial ended well)."""
        ranked = self.rank(table)
        return None if ranked.empty else ranked.iloc[0]

    def describe(self) -> str:
        what = "its best epoch's" if self.rule == "best" else "its final epoch's"
        return (f"selected by {what} {self.metric} (epoch rule '{self.rule}') among the trials that reached "
                f"{self.max_epochs} "
                f"epochs; trials ASHA stopped earlier rank below them")


def distinct(ranked: pd.DataFrame, params: Iterable[str]) -> pd.DataFrame:
    """The ranked trials with repeated configurations dropped (the first, best, kept)."""
    return ranked.drop_duplicates(list(params)).reset_index(drop=True)
