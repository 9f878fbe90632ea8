"""Statistics over seeds: mean, sample standard deviation and the two-sided 95% Student-t
interval of the mean, and paired comparisons of two configurations on the seeds they share
(a seed fixes the split, the labelled subset, the partial labels and the initialisation,
so the per-seed differences are what compares them: paired t-test and Wilcoxon signed-rank
test). Overlapping intervals are never read as "equal"."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

LEVEL = 0.95


def interval(values: Iterable[float], level: float = LEVEL) -> dict[str, float]:
    """``n``, ``mean``, ``std`` (ddof 1), ``lo``, ``hi``: mean -+ t_{(1+level)/2, n-1} * std / sqrt(n);
    NaN values are left out; std and the interval are NaN below two values."""
    x = np.asarray([v for v in values if v is not None and not math.isnan(float(v))], dtype=float)
    n = len(x)
    if n == 0:
        return {"n": 0, "mean": math.nan, "std": math.nan, "lo": math.nan, "hi": math.nan}
    mean = float(x.mean())
    if n < 2:
        return {"n": 1, "mean": mean, "std": math.nan, "lo": math.nan, "hi": math.nan}
    from scipy.stats import t
    std = float(x.std(ddof=1))
    half = float(t.ppf((1 + level) / 2, n - 1)) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "lo": mean - half, "hi": mean + half}


def summarise(runs: pd.DataFrame, by: str, metrics: dict[str, str]) -> pd.DataFrame:
    """One row per ``by`` value: for each ``metrics`` column (``{column: name}``) the
    ``name/mean``, ``name/std``, ``name/lo``, ``name/hi`` and the seed count ``n``."""
    rows = []
    for key, group in runs.groupby(by, sort=False):
        row: dict[str, object] = {by: key, "n": int(group[next(iter(metrics))].notna().sum())}
        for column, name in metrics.items():
            s = interval(group[column])
            row |= {f"{name}/{k}": v for k, v in s.items() if k != "n"}
        rows.append(row)
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class Paired:
    """``a`` against ``b`` on ``metric`` over their shared ``seeds``: the mean per-seed
    difference a - b, its 95% t-interval, the two-sided p-values of the paired t-test and
    of the Wilcoxon signed-rank test (NaN where the seeds are too few)."""

    a: str
    b: str
    metric: str
    seeds: tuple[int, ...]
    mean: float
    lo: float
    hi: float
    t_p: float
    wilcoxon_p: float

    @property
    def n(self) -> int:
        return len(self.seeds)

    def to_dict(self) -> dict[str, object]:
        return {"a": self.a, "b": self.b, "metric": self.metric, "seeds": list(self.seeds), "n": self.n,
                "mean_diff": self.mean, "lo": self.lo, "hi": self.hi, "t_test_p": self.t_p,
                "wilcoxon_p": self.wilcoxon_p}

    def sentence(self, scale: float = 100.0, unit: str = "pt", alpha: float = 1 - LEVEL) -> str:
        """What the seeds show, in words ("A better than B by 0.50 ± 0.20 pt, p = 0.010, 5 seeds")."""
        seeds = f"{self.n} seed{'s' if self.n != 1 else ''}"
        if self.n < 2 or math.isnan(self.t_p):
            return (f"{self.a} - {self.b} = {self.mean * scale:+.2f} {unit} by {self.metric} on {seeds}: "
                    f"too few shared seeds to test")
        half = (self.hi - self.lo) / 2 * scale
        tests = f"paired t-test p = {_p(self.t_p)}, Wilcoxon p = {_p(self.wilcoxon_p)}, {seeds}"
        if self.t_p < alpha:
            better, worse = (self.a, self.b) if self.mean > 0 else (self.b, self.a)
            return (f"{better} better than {worse} by {abs(self.mean) * scale:.2f} ± {half:.2f} {unit} "
                    f"by {self.metric} ({tests})")
        return (f"{self.a} - {self.b} = {self.mean * scale:+.2f} ± {half:.2f} {unit} by {self.metric} ({tests}): "
                f"no difference shown at the {alpha:.0%} level, which does not make them equal")


def _p(p: float) -> str:
    if math.isnan(p):
        return "n/a"
    return f"{p:.2g}" if p < 0.001 else f"{p:.3f}"


def paired(a: pd.Series, b: pd.Series, names: tuple[str, str], metric: str, level: float = LEVEL) -> Paired:
    """Compare ``a`` and ``b`` (values indexed by seed; NaN: no result) on their shared seeds."""
    from scipy import stats
    both = pd.concat([a.rename("a"), b.rename("b")], axis=1, join="inner").dropna()
    d = (both["a"] - both["b"]).to_numpy(dtype=float)
    seeds = tuple(int(s) for s in both.index)
    n = len(d)
    if n == 0:
        return Paired(*names, metric, seeds, math.nan, math.nan, math.nan, math.nan, math.nan)
    mean = float(d.mean())
    if n < 2:
        return Paired(*names, metric, seeds, mean, math.nan, math.nan, math.nan, math.nan)
    sd = float(d.std(ddof=1))
    half = float(stats.t.ppf((1 + level) / 2, n - 1)) * sd / math.sqrt(n)
    # every seed differing by the same amount leaves no spread to test against: p is 0 (or 1 at no difference)
    t_p = (1.0 if mean == 0.0 else 0.0) if sd == 0.0 else float(stats.ttest_rel(both["a"], both["b"]).pvalue)
    if np.all(d == 0):
        w_p = 1.0
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ties or zero differences: its normal approximation
            w_p = float(stats.wilcoxon(d).pvalue)
    return Paired(*names, metric, seeds, mean, mean - half, mean + half, t_p, w_p)
