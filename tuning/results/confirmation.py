"""A confirmation's result: per configuration the mean, std and 95% t-interval of val/acc
and test/acc over seeds, the configuration chosen on validation only, and whether the
intervals separate it from the others (the command: ``tuning.cli.confirm``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from tuning.plan.grid_plan import GridPlan
from tuning.plan.search_plan import SearchPlan
from tuning.results.report import markdown_table
from tuning.results.trials import grid_results

METRICS = {"val_acc": "val/acc", "test_acc": "test/acc (final epoch)", "best_test_acc": "test/acc (best-val epoch)"}


@dataclass(frozen=True)
class Verdict:
    """The configuration chosen on validation and whether its intervals separate it from
    the others (per metric, per other configuration); ``confirm.json`` holds it."""

    chosen: str
    params: dict[str, Any]
    seeds: tuple[int, ...]
    epochs: int
    separated: dict[str, dict[str, bool]]   # metric -> other configuration -> disjoint intervals
    statement: str

    def to_dict(self) -> dict[str, Any]:
        return {"chosen": self.chosen, "params": self.params, "seeds": list(self.seeds), "epochs": self.epochs,
                **self.separated, "statement": self.statement}


def summary(grid: GridPlan) -> tuple[Any, Any, Verdict]:
    """Per-run table, per-configuration summary and the verdict (chosen configuration,
    separation by val/acc and by final test/acc)."""
    from tuning.results.stats import separates, summarise
    runs = grid_results(grid)
    table = summarise(runs, "cell", METRICS)
    ranks = {f"rank{c.rank}": c for c in grid.extra.top}
    table.insert(1, "search_val_acc", [ranks[c].val_acc for c in table["cell"]])
    for name in next(iter(ranks.values())).params:
        table[name] = [ranks[c].params[name] for c in table["cell"]]
    table = table.sort_values("val/acc/mean", ascending=False).reset_index(drop=True)
    chosen = table.iloc[0]
    separated = {}
    for metric in ("val/acc", "test/acc (final epoch)"):
        a = (chosen[f"{metric}/lo"], chosen[f"{metric}/hi"])
        separated[metric] = {row["cell"]: bool(separates(a, (row[f"{metric}/lo"], row[f"{metric}/hi"])))
                             for _, row in table.iloc[1:].iterrows()}
    return runs, table, Verdict(chosen["cell"], ranks[chosen["cell"]].params, grid.seeds, grid.epochs, separated,
                                statement(chosen["cell"], separated, len(table)))


def statement(chosen: str, separated: dict[str, dict[str, bool]], k: int) -> str:
    if k < 2:
        return f"Only one configuration was confirmed ({chosen}); there is nothing to separate."
    parts = []
    for metric in ("val/acc", "test/acc (final epoch)"):
        sep = separated[metric]
        apart = [c for c, s in sep.items() if s]
        if len(apart) == len(sep):
            parts.append(f"By {metric}, the 95% interval of {chosen} separates it from every other configuration.")
        elif not apart:
            parts.append(f"By {metric}, the 95% interval of {chosen} overlaps those of all others "
                         f"({', '.join(sep)}): the seeds do not tell these configurations apart.")
        else:
            parts.append(f"By {metric}, {chosen} is separated from {', '.join(apart)} but overlaps "
                         f"{', '.join(c for c in sep if not sep[c])}.")
    return " ".join(parts)


def render(grid: GridPlan, search: SearchPlan, runs: Any, table: Any, verdict: Verdict) -> str:
    cols = ["cell", "n", "search_val_acc"]
    for metric in METRICS.values():
        cols += [f"{metric}/mean", f"{metric}/std", f"{metric}/lo", f"{metric}/hi"]
    params = list(verdict.params)
    return "\n".join([
        f"# Confirmation of search {search.name}: {search.method} on {search.dataset}", "",
        f"The search's top {len(table)} configurations by final val/acc, each trained with seeds "
        f"{', '.join(map(str, grid.seeds))} for {grid.epochs} epochs (no early stopping). Intervals are "
        f"two-sided 95% Student-t intervals of the mean over seeds. test/acc is reported at the final epoch "
        f"and at each run's best-val epoch; the choice uses validation only.", "",
        f"**Chosen on validation: {verdict.chosen}** "
        + " ".join(f"{k}={v}" for k, v in verdict.params.items()), "",
        verdict.statement, "", "## Per configuration", "", markdown_table(table[cols]), "",
        markdown_table(table[["cell", *params]]), "", "## Runs", "", markdown_table(runs), ""])


def fmt4(v: float) -> str:
    """A number to 4 decimals, or n/a."""
    return "n/a" if v is None or math.isnan(v) else f"{v:.4f}"
