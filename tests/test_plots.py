"""The report's figures have readable axes: an integer parameter (and the epoch) on integer
ticks, a log parameter labelled in plain numbers at 1-2-5 steps (minor ticks unlabelled),
however many decades the values span. Checked on the ticks, not on pixels."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from tuning.results import plots

PARAMS = {"lr": "loguniform", "weight_decay": "loguniform", "eps": "loguniform", "width": "logint", "warmup": "int",
          "tau": "uniform", "score": "categorical"}


def table(rng: np.random.Generator, n: int = 12) -> pd.DataFrame:
    """Values like the quick spaces': lr within a decade, weight decay across one, eps across
    four, a log integer 8..512, warm-up 1..3."""
    return pd.DataFrame({
        "lr": np.exp(rng.uniform(math.log(0.01), math.log(0.1), n)),
        "weight_decay": np.exp(rng.uniform(math.log(2e-4), math.log(3e-3), n)),
        "eps": np.geomspace(1e-5, 1e-1, n), "width": np.geomspace(8, 512, n).round().astype(int),
        "warmup": rng.integers(1, 4, n), "tau": rng.uniform(1, 5, n), "score": rng.choice(["kl", "official"], n),
        "val_acc": rng.uniform(0.6, 0.85, n), "status": rng.choice(["finished", "stopped"], n)})


def shown_ticks(ax, minor: bool = False) -> list[tuple[float, str]]:
    """(location, label) of the x ticks inside the axis' limits, after drawing."""
    lo, hi = sorted(ax.get_xlim())
    ticks = ax.xaxis.get_minorticklocs() if minor else ax.get_xticks()
    labels = ax.xaxis.get_minorticklabels() if minor else ax.get_xticklabels()
    return [(float(t), lab.get_text()) for t, lab in zip(ticks, labels, strict=True) if lo <= t <= hi]


@pytest.fixture(scope="module")
def axes():
    fig = plots.accuracy_figure(table(np.random.default_rng(0)), PARAMS)
    fig.canvas.draw()
    by_name = {ax.get_xlabel(): ax for ax in fig.axes if ax.get_xlabel()}
    yield by_name
    plots.plt.close(fig)


def test_integer_parameters_sit_on_integer_ticks(axes) -> None:
    ticks = shown_ticks(axes["warmup"])
    assert [t for t, _ in ticks] == [1, 2, 3] and [label for _, label in ticks] == ["1", "2", "3"]


@pytest.mark.parametrize(("name", "labels"), [("lr", ["0.01", "0.02", "0.05"]),
                                              ("weight_decay", ["0.0002", "0.0005", "0.001", "0.002"]),
                                              ("width", ["10", "20", "50", "100", "200", "500"]),
                                              ("eps", ["1e-05", "0.0001", "0.001", "0.01", "0.1"])])  # > 2 decades
def test_log_axes_are_labelled_in_plain_1_2_5_steps(axes, name: str, labels: list[str]) -> None:
    ticks = shown_ticks(axes[name])
    assert axes[name].get_xscale() == "log"
    assert [label for _, label in ticks] == labels
    assert all(float(label) == pytest.approx(t) for t, label in ticks)
    assert all(label == "" for _, label in shown_ticks(axes[name], minor=True))  # no crowded minor labels


def test_epoch_axes_use_integer_ticks() -> None:
    rows = [(t, e, 0.4 + 0.1 * e) for t, n in (("a", 4), ("b", 2)) for e in range(1, n + 1)]
    history = pd.DataFrame(rows, columns=["trial_id", "epoch", "val/acc"])
    history["cand/lab_size"], history["cand/lab_coverage"] = 2.0, 0.9
    for fig in (plots.learning_curves_figure(history, "a"),
                plots.candidate_sets_figure(history[history["trial_id"] == "a"], "a")):
        fig.canvas.draw()
        for ax in fig.axes:
            ticks = shown_ticks(ax)
            assert [t for t, _ in ticks] == [1, 2, 3, 4] and [label for _, label in ticks] == ["1", "2", "3", "4"]
        plots.plt.close(fig)
