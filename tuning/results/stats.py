"""Spread over seeds: mean, sample standard deviation and the two-sided 95% Student-t
interval of the mean, and whether such intervals separate one configuration from others."""

from __future__ import annotations

import math
from collections.abc import Iterable

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


def separates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether the intervals ``(lo, hi)`` are disjoint (NaN bounds never separate)."""
    if any(math.isnan(v) for v in (*a, *b)):
        return False
    return a[0] > b[1] or b[0] > a[1]
