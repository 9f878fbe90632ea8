"""The reproduced paper table: one row per cell (run or skipped) with the mean, std and 95%
t-interval over the seeds that finished (failed and diverged runs counted apart) of test
accuracy (final epoch; and at the best-val epoch) and val/acc, the paper's number and the
difference with its interval, the configuration's source and the data protocol, rendered as
markdown (the command: ``tuning.cli.reproduce``)."""

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
    return table_of(grid, grid_results(grid))


def table_of(grid: GridPlan, runs: Any) -> Any:
    """``table`` of the per-run table ``runs`` (cell, seed, status, accuracies)."""
    import pandas as pd

    rows = []
    for cell in grid.cells:
        key, facts = cell.key, grid.extra.cell(cell.key)
        everything = runs[runs["cell"] == key]
        got = everything[everything["status"] == "finished"]
        failed = int(everything["status"].isin(("error", "diverged")).sum())
        final, at_best = interval(got["test_acc"] * 100), interval(got["best_test_acc"] * 100)
        val = interval(got["val_acc"] * 100)
        paper = facts.paper
        ds, labelled, rate = facts.dataset, facts.labelled, facts.partial_rate
        rows.append({"dataset": ds, "labelled": labelled, "partial_rate": rate, "method": facts.method,
                     "config_from": facts.config_from, "protocol": facts.protocol, "status": "ran", "reason": "",
                     "n": final["n"], "failed": failed, "planned": len(grid.seeds),
                     "test_acc_mean": final["mean"], "test_acc_std": final["std"],
                     "test_acc_lo": final["lo"], "test_acc_hi": final["hi"],
                     "test_acc_best_val_mean": at_best["mean"], "test_acc_best_val_std": at_best["std"],
                     "val_acc_mean": val["mean"], "val_acc_std": val["std"], "paper": paper,
                     "paper_protocol": facts.paper_protocol,
                     **difference(final, paper if facts.paper_protocol else None)})
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


def difference(final: dict[str, float], paper: float | None) -> dict[str, float]:
    """Ours - paper (points): the mean's difference and its 95% interval (the paper's number
    is taken as exact: its own spread is not published per cell)."""
    if paper is None:
        return {"diff": math.nan, "diff_lo": math.nan, "diff_hi": math.nan}
    return {"diff": final["mean"] - paper, "diff_lo": final["lo"] - paper, "diff_hi": final["hi"] - paper}


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
            if math.isnan(c["paper"]):
                paper = "paper n/a"
            elif not c["paper_protocol"]:
                paper = f"paper {c['paper']:.2f}, another protocol: no Δ"
            else:
                paper = (f"paper {c['paper']:.2f}, Δ {c['diff']:+.2f} "
                         f"[{_signed(c['diff_lo'])}, {_signed(c['diff_hi'])}]")
            seeds = "" if c["n"] == c["planned"] else f"; {c['n']} of {c['planned']} seeds finished"
            row[m] = f"{text} ({paper}{seeds})"
        lines.append(row)
    wide = pd.DataFrame(lines)
    ran = frame[frame["status"] == "ran"]
    out = [f"# SPMI paper table, reproduced: {grid.name}", "",
           f"Test accuracy (%) at the final epoch, mean ± std over {len(grid.seeds)} seeds "
           f"({', '.join(map(str, grid.seeds))}), **budget {grid.epochs} epochs** (the paper: 500). "
           f"Failed and diverged runs are counted, never averaged. "
           f"Bold: best of its row. Beside each cell the paper's number and our difference (ours − paper) with "
           f"its 95% interval; "
           f"'paper n/a': the paper's number is not known to this tool (see tuning/plan/paper_table.py).", "",
           markdown_table(wide), "", "## Configurations and data protocols", "",
           markdown_table(ran[["dataset", "labelled", "partial_rate", "method", "config_from", "protocol"]]), ""]
    skipped = frame[frame["status"] == "skipped"]
    if not skipped.empty:
        out += ["## Skipped", ""]
        for (ds, labelled, rate, reason), group in skipped.groupby(
                ["dataset", "labelled", "partial_rate", "reason"], sort=False):
            out.append(f"- {ds} l={labelled} p={rate:g} ({', '.join(group['method'])}): {reason}")
        out.append("")
    out += ["## All cells", "", markdown_table(frame.drop(columns=["reason"])), "", "![table](table.png)", ""]
    return "\n".join(out)


def _signed(v: float) -> str:
    return "n/a" if v is None or math.isnan(v) else f"{v:+.2f}"


def _num(v: float) -> str:
    return "n/a" if v is None or math.isnan(v) else f"{v:.2f}"
