"""A confirmation's result: per configuration the mean, std and 95% t-interval of val/acc
and test/acc over the seeds that finished (failed and diverged runs are counted apart), the
configuration chosen on validation only (the search's epoch rule), and paired tests of the
configurations on their shared seeds (the command: ``tuning.cli.confirm``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from tuning.plan.grid_plan import ConfirmSettings, GridPlan
from tuning.plan.search_plan import SearchPlan
from tuning.results.report import markdown_table
from tuning.results.stats import Paired
from tuning.results.trials import grid_results

METRICS = {"val_acc": "val/acc", "best_val_acc": "val/acc (best-val epoch)", "test_acc": "test/acc (final epoch)",
           "best_test_acc": "test/acc (best-val epoch)"}   # run columns -> names (best-val: best by the metric)
FAILED = ("error", "diverged")   # runs that ended without a result (the rest unfinished: running, pending)


def metric_names(metric: str = "val/acc") -> dict[str, str]:
    """The per-run columns summarised, and their names: ``METRICS``, and the search's own
    metric (``score``) first where it is not val/acc."""
    if metric == "val/acc":
        return dict(METRICS)
    return {"score": metric, "best_score": f"{metric} (best-val epoch)", **METRICS}


def rule_metrics(rule: str, metric: str = "val/acc") -> tuple[str, str]:
    """(validation, test) metric names that the epoch rule selects and compares by."""
    return ((f"{metric} (best-val epoch)", "test/acc (best-val epoch)") if rule == "best"
            else (metric, "test/acc (final epoch)"))


@dataclass(frozen=True)
class Verdict:
    """The configuration chosen on validation and the paired comparisons of the configurations
    on their shared seeds (``confirm.json`` holds it)."""

    chosen: str
    params: dict[str, Any]
    seeds: tuple[int, ...]
    epochs: int
    epoch_rule: str
    finished: dict[str, str]       # configuration -> "3 of 3 seeds finished" (failed ones named)
    paired: tuple[Paired, ...]     # every pair of configurations, by the rule's val and test metric
    statement: str
    metric: str = "val/acc"        # the search's validation metric

    def to_dict(self) -> dict[str, Any]:
        return {"chosen": self.chosen, "params": self.params, "seeds": list(self.seeds), "epochs": self.epochs,
                "epoch_rule": self.epoch_rule, "metric": self.metric, "finished": self.finished,
                "paired": [p.to_dict() for p in self.paired], "statement": self.statement}


def seed_counts(runs: Any, cells: list[str], planned: int) -> tuple[Any, dict[str, str]]:
    """Per configuration: its finished, failed (error, diverged) and unfinished seed counts,
    and the sentence "2 of 3 seeds finished (1 diverged)"."""
    import pandas as pd
    rows, words = [], {}
    for cell in cells:
        got = runs[runs["cell"] == cell]
        finished = int((got["status"] == "finished").sum())
        failed = {s: int((got["status"] == s).sum()) for s in FAILED}
        rows.append({"cell": cell, "finished": finished, "failed": sum(failed.values()), "planned": planned})
        notes = [f"{n} {s}" for s, n in failed.items() if n]
        words[cell] = f"{finished} of {planned} seeds finished" + (f" ({', '.join(notes)})" if notes else "")
    return pd.DataFrame(rows), words


def summary(grid: GridPlan) -> tuple[Any, Any, Verdict]:
    """Per-run table, per-configuration summary over the *finished* runs (failed and diverged
    runs are counted, never averaged) and the verdict: the configuration chosen by the
    rule's validation metric, and paired tests of every pair of configurations."""
    runs = grid_results(grid)
    return (runs, *compare(runs, grid.extra, tuple(grid.seeds), grid.epochs))


def compare(runs: Any, settings: ConfirmSettings, seeds: tuple[int, ...], epochs: int) -> tuple[Any, Verdict]:
    """``summary`` of the per-run table ``runs`` (cell, seed, status and the METRICS columns)."""
    from tuning.results.stats import paired, summarise
    rule, names = settings.epoch_rule, metric_names(settings.metric)
    val_metric, test_metric = rule_metrics(rule, settings.metric)
    finished_runs = runs[runs["status"] == "finished"]
    ranks = {f"rank{c.rank}": c for c in settings.top}
    counts, words = seed_counts(runs, list(ranks), len(seeds))
    table = summarise(finished_runs, "cell", names)
    table = counts.merge(table.drop(columns=["n"]), on="cell", how="left") if not table.empty else counts
    table.insert(1, "search_val_acc", [ranks[c].val_acc for c in table["cell"]])
    for name in next(iter(ranks.values())).params:
        table[name] = [ranks[c].params[name] for c in table["cell"]]
    if f"{val_metric}/mean" not in table:
        raise ValueError("no confirmation run finished: nothing to compare (see the runs' status)")
    table = table.sort_values(f"{val_metric}/mean", ascending=False, na_position="last").reset_index(drop=True)
    column = {name: col for col, name in names.items()}
    by_seed = {cell: finished_runs[finished_runs["cell"] == cell].set_index("seed") for cell in table["cell"]}
    cells = list(table["cell"])
    pairs = tuple(paired(by_seed[a][column[m]], by_seed[b][column[m]], (a, b), m)
                  for m in (val_metric, test_metric) for i, a in enumerate(cells) for b in cells[i + 1:])
    chosen = cells[0]
    return table, Verdict(chosen, ranks[chosen].params, seeds, epochs, rule, words, pairs,
                          statement(chosen, pairs, words), settings.metric)


def statement(chosen: str, pairs: tuple[Paired, ...], finished: dict[str, str]) -> str:
    """The verdict in words: the chosen configuration against each other one, by the rule's
    validation and test metrics, as the paired tests state it."""
    counts = "; ".join(f"{cell}: {text}" for cell, text in finished.items())
    if len(finished) < 2:
        return f"Only one configuration was confirmed ({chosen}; {counts}); there is nothing to compare."
    mine = [p for p in pairs if p.a == chosen]
    return (f"Chosen on validation: {chosen}. " + " ".join(p.sentence() + "." for p in mine)
            + f" Seeds: {counts}.")


def render(grid: GridPlan, search: SearchPlan, runs: Any, table: Any, verdict: Verdict) -> str:
    import pandas as pd
    cols = ["cell", "finished", "failed", "planned", "search_val_acc"]
    for metric in metric_names(verdict.metric).values():
        cols += [f"{metric}/mean", f"{metric}/std", f"{metric}/lo", f"{metric}/hi"]
    cols = [c for c in cols if c in table]
    params = list(verdict.params)
    pairs = pd.DataFrame([p.to_dict() for p in verdict.paired]).drop(columns=["seeds"], errors="ignore")
    val_metric, _ = rule_metrics(verdict.epoch_rule, verdict.metric)
    return "\n".join([
        f"# Confirmation of search {search.name}: {search.method} on {search.dataset}", "",
        f"The search's top {len(table)} configurations as its selection ranks them (epoch rule "
        f"'{verdict.epoch_rule}'), each trained with seeds {', '.join(map(str, grid.seeds))} for {grid.epochs} "
        f"epochs (no early stopping). Means, standard deviations and two-sided 95% Student-t intervals are over "
        f"the seeds that finished; failed and diverged runs are counted, never averaged. test/acc is reported at "
        f"the final epoch and at each run's best-val epoch; the choice uses {val_metric} only. Configurations "
        f"are compared on the seeds they share (paired t-test and Wilcoxon signed-rank test of the per-seed "
        f"differences), never by whether intervals overlap.", "",
        f"**Chosen on validation: {verdict.chosen}** "
        + " ".join(f"{k}={v}" for k, v in verdict.params.items()), "",
        verdict.statement, "", "## Per configuration", "", markdown_table(table[cols]), "",
        markdown_table(table[["cell", *params]]), "", "## Paired comparisons (a - b, per seed)", "",
        markdown_table(pairs) if not pairs.empty else "(one configuration: none)", "",
        "## Runs", "", markdown_table(runs), ""])


def fmt4(v: float) -> str:
    """A number to 4 decimals, or n/a."""
    return "n/a" if v is None or math.isnan(v) else f"{v:.4f}"
