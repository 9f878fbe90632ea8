"""The reproduced paper table: one row per cell (run or skipped) with the mean and std over
seeds of test accuracy (final epoch; and at the best-val epoch) and val/acc, the paper's
number and the difference, rendered as markdown (the command: ``tuning.cli.reproduce``)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from tuning.plan.grid_plan import GridPlan
from tuning.results.report import markdown_table
from tuning.results.stats import interval
from tuning.results.trials import grid_results


def table(grid: GridPlan) -> Any:
    """Long table: one row per cell (run or skipped) with mean/std/n of test accuracy
    (final epoch; and at the best-val epoch), val/acc, the paper's number and the difference."""
    import pandas as pd

    runs = grid_results(grid)
    rows = []
    for cell in grid.cells:
        key, facts = cell.key, grid.extra.cell(cell.key)
        got = runs[runs["cell"] == key]
        final, at_best = interval(got["test_acc"] * 100), interval(got["best_test_acc"] * 100)
        val = interval(got["val_acc"] * 100)
        paper = facts.paper
        ds, labelled, rate = facts.dataset, facts.labelled, facts.partial_rate
        rows.append({"dataset": ds, "labelled": labelled, "partial_rate": rate, "method": facts.method,
                     "config_from": facts.config_from, "status": "ran", "reason": "", "n": final["n"],
                     "test_acc_mean": final["mean"], "test_acc_std": final["std"],
                     "test_acc_best_val_mean": at_best["mean"], "test_acc_best_val_std": at_best["std"],
                     "val_acc_mean": val["mean"], "val_acc_std": val["std"], "paper": paper,
                     "diff": (final["mean"] - paper) if paper is not None else math.nan})
    for s in grid.extra.skipped:
        rows.append({**dataclasses.asdict(s), "config_from": "", "status": "skipped", "n": 0})
    frame = pd.DataFrame(rows)
    frame["paper"] = frame["paper"].astype(float)
    keys = ["dataset", "labelled", "partial_rate"]
    best = frame[frame["status"] == "ran"].groupby(keys)["test_acc_mean"].transform("max")
    frame["best"] = False
    frame.loc[best.index, "best"] = frame.loc[best.index, "test_acc_mean"] == best
    frame["epochs"] = grid.epochs
    return frame


def render(grid: GridPlan, frame: Any) -> str:
    import pandas as pd

    methods = grid.extra.methods
    lines = []
    for (ds, labelled, rate), group in frame.groupby(["dataset", "labelled", "partial_rate"], sort=False):
        row = {"dataset": ds, "l": labelled, "p": rate}
        for m in methods:
            cell = group[group["method"] == m]
            if cell.empty:
                row[m] = ""
                continue
            c = cell.iloc[0]
            if c["status"] == "skipped":
                row[m] = "skipped"
                continue
            text = f"{c['test_acc_mean']:.2f} ± {_num(c['test_acc_std'])}"
            text = f"**{text}**" if c["best"] else text
            paper = "paper n/a" if math.isnan(c["paper"]) else f"paper {c['paper']:.2f}, Δ {c['diff']:+.2f}"
            row[m] = f"{text} ({paper})"
        lines.append(row)
    wide = pd.DataFrame(lines)
    ran = frame[frame["status"] == "ran"]
    out = [f"# SPMI paper table, reproduced: {grid.name}", "",
           f"Test accuracy (%) at the final epoch, mean ± std over {len(grid.seeds)} seeds "
           f"({', '.join(map(str, grid.seeds))}), **budget {grid.epochs} epochs** (the paper: 500). "
           f"Bold: best of its row. Beside each cell the paper's number and our difference (ours − paper); "
           f"'paper n/a': the paper's number is not known to this tool (see tuning/plan/paper_table.py).", "",
           markdown_table(wide), "", "Configurations: " + ", ".join(
               sorted({f"{r.dataset}/{r.method}: {r.config_from}" for r in ran.itertuples()})), ""]
    skipped = frame[frame["status"] == "skipped"]
    if not skipped.empty:
        out += ["## Skipped", ""]
        for (ds, labelled, rate, reason), group in skipped.groupby(
                ["dataset", "labelled", "partial_rate", "reason"], sort=False):
            out.append(f"- {ds} l={labelled} p={rate:g} ({', '.join(group['method'])}): {reason}")
        out.append("")
    out += ["## All cells", "", markdown_table(frame.drop(columns=["reason"])), "", "![table](table.png)", ""]
    return "\n".join(out)


def _num(v: float) -> str:
    return "n/a" if v is None or math.isnan(v) else f"{v:.2f}"
