"""The one definition of a search's selected configuration, used by the report, the MLflow
parent run, the published model, Optuna's best trial, the confirmation and the paper table.

A trial's score is its validation accuracy under the search's **epoch rule**: ``best``, the
highest ``val/acc`` of any epoch (the network the trial keeps, ``tuning.trial.best``), or
``last``, the ``val/acc`` of its final epoch. Trials are compared at the full budget: a
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
    """How a search selects its configuration: the epoch rule at ``max_epochs`` epochs."""

    rule: str
    max_epochs: int

    def __post_init__(self) -> None:
        check_rule(self.rule)

    @property
    def val_column(self) -> str:
        """The trials-table column holding a trial's score."""
        return "best_val_acc" if self.rule == "best" else "val_acc"

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
        (reached ``max_epochs``) and ``score`` columns."""
        if table.empty:
            return table.assign(full_budget=pd.Series(dtype=bool), score=pd.Series(dtype=float))
        done = table[table["status"].isin(GOOD_STATUSES) & table[self.val_column].notna()].copy()
        done["full_budget"] = done["epochs"] >= self.max_epochs
        done["score"] = done[self.val_column].astype(float)
        return done.sort_values(["full_budget", "epochs", "score", "trial_id"],
                                ascending=[False, False, False, True]).reset_index(drop=True)

    def best(self, table: pd.DataFrame) -> pd.Series | None:
        """The selected trial's row (None when no trial ended well)."""
        ranked = self.rank(table)
        return None if ranked.empty else ranked.iloc[0]

    def describe(self) -> str:
        what = "its best epoch's val/acc" if self.rule == "best" else "its final epoch's val/acc"
        return (f"selected by {what} (epoch rule '{self.rule}') among the trials that reached {self.max_epochs} "
                f"epochs; trials ASHA stopped earlier rank below them")


def distinct(ranked: pd.DataFrame, params: Iterable[str]) -> pd.DataFrame:
    """The ranked trials with repeated configurations dropped (the first, best, kept)."""
    return ranked.drop_duplicates(list(params)).reset_index(drop=True)
