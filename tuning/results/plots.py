"""PNG figures of a search (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker as ticker  # noqa: E402
import pandas as pd  # noqa: E402

from tuning.plan.settings import METRIC, TIME_ATTR  # noqa: E402


def learning_curves(history: pd.DataFrame, best_id: str | None, path: Path) -> Path:
    """val/acc against epoch (integer ticks), one line per trial (the best one highlighted)."""
    return _save(learning_curves_figure(history, best_id), path)


def learning_curves_figure(history: pd.DataFrame, best_id: str | None) -> plt.Figure:
    """The figure of :func:`learning_curves`."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for trial_id, h in history.groupby("trial_id"):
        best = trial_id == best_id
        ax.plot(h[TIME_ATTR], h[METRIC], lw=2.5 if best else 1, alpha=1 if best else 0.6,
                label=f"{trial_id} (best)" if best else None, color="C3" if best else None)
    ax.set(xlabel="epoch", ylabel="validation accuracy", title="Learning curves of all trials")
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if best_id is not None:
        ax.legend(loc="lower right")
    return fig


def accuracy_vs_params(table: pd.DataFrame, params: dict[str, str], path: Path) -> Path:
    """Final val/acc against each searched parameter (log axis for log distributions)."""
    return _save(accuracy_figure(table, params), path)


def accuracy_figure(table: pd.DataFrame, params: dict[str, str]) -> plt.Figure:
    """The figure of :func:`accuracy_vs_params`: one panel per parameter (``params``: name ->
    distribution), integer parameters on integer ticks, log ones on readable 1-2-5 ticks."""
    names = list(params)
    cols = min(3, max(1, len(names)))
    rows = -(-len(names) // cols) if names else 1
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    colours = {"finished": "C0", "stopped": "C1", "error": "C3"}
    for ax, name in zip(axes.flat, names, strict=False):
        for status, part in table.groupby("status"):
            x = part[name].astype(str) if params[name] == "categorical" else part[name]
            ax.scatter(x, part["val_acc"], s=22, color=colours.get(status, "C7"), label=status)
        if params[name] in ("loguniform", "logint"):
            _log_ticks(ax, table[name])
        elif params[name] == "int":
            ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        ax.set(xlabel=name, ylabel="final val/acc")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    if names:
        axes.flat[0].legend(fontsize=7)
    fig.suptitle("Final validation accuracy against the searched values (stopped = ASHA, partial)")
    return fig


def _log_ticks(ax: plt.Axes, values: pd.Series) -> None:
    """A log x axis labelled in plain numbers at 1, 2 and 5 times the powers of ten (only
    the powers where the values span more than two decades); minor ticks unlabelled."""
    ax.set_xscale("log")
    lo, hi = float(values.min()), float(values.max())
    wide = lo > 0 and hi / lo > 100
    ax.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0,) if wide else (1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_locator(ticker.LogLocator(base=10, subs="auto"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())


def candidate_sets(history: pd.DataFrame, trial_id: str, path: Path) -> Path:
    """Candidate-set size and true-label coverage over epochs (integer ticks) of one trial."""
    return _save(candidate_sets_figure(history, trial_id), path)


def candidate_sets_figure(history: pd.DataFrame, trial_id: str) -> plt.Figure:
    """The figure of :func:`candidate_sets`."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("cand/lab_size", "labelled"), ("cand/unl_size", "unlabelled")):
        if key in history:
            left.plot(history[TIME_ATTR], history[key], marker="o", label=label)
    for key, label in (("cand/lab_coverage", "labelled"), ("cand/unl_coverage", "unlabelled")):
        if key in history:
            right.plot(history[TIME_ATTR], history[key], marker="o", label=label)
    left.set(xlabel="epoch", ylabel="mean candidate-set size", title=f"Candidate sets, trial {trial_id}")
    right.set(xlabel="epoch", ylabel="share holding the true label", title="True-label coverage")
    for ax in (left, right):
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    return fig


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def paper_table(frame: pd.DataFrame, methods: list[str], title: str, path: Path) -> Path | None:
    """The reproduced table's test accuracies (mean and std over seeds) per row and method,
    the paper's numbers as black ticks where known; None when no cell ran."""
    import numpy as np
    ran = frame[frame["status"] == "ran"]
    if ran.empty:
        return None
    keys = list(dict.fromkeys(zip(ran["dataset"], ran["labelled"], ran["partial_rate"], strict=True)))
    methods = [m for m in methods if m in set(ran["method"])]
    width, paper_shown = 0.8 / len(methods), False
    fig, ax = plt.subplots(figsize=(max(5, 1.8 * len(keys) * len(methods) / 2), 4.5))
    for i, m in enumerate(methods):
        sub = ran[ran["method"] == m].set_index(["dataset", "labelled", "partial_rate"]).reindex(keys)
        x = np.arange(len(keys)) + (i - (len(methods) - 1) / 2) * width
        ax.bar(x, sub["test_acc_mean"], width, yerr=sub["test_acc_std"].fillna(0), capsize=3, label=m)
        if sub["paper"].notna().any():
            ax.scatter(x, sub["paper"], marker="_", s=300, color="black", zorder=3,
                       label=None if paper_shown else "paper")
            paper_shown = True
    ax.set_xticks(np.arange(len(keys)), [f"{d}\nl={lab} p={p:g}" for d, lab, p in keys])
    ax.set(ylabel="test accuracy (%)", title=title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)
