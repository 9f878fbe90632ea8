"""How far each validation criterion's choice lands from the best in hindsight, on a
learning-curve table (``benchmarks/curves.py``): the selection question of the partial-label
issue, measured without running searches.

For each seed, every configuration of the table is a candidate; a criterion (``val/acc``,
the clean-label oracle, or the partial-label ``val/covering_rate`` and ``val/approx_acc``)
with an epoch rule (``best``: each run's best epoch by the criterion, whose test accuracy
is taken there; ``last``: its final epoch) selects one configuration; its **regret** is the
best test accuracy in hindsight (the highest of any configuration at any epoch of that seed,
the same reference for every criterion and rule) minus the test accuracy of the network
the criterion delivers, in points. Reported per (criterion, rule): the mean regret over seeds with its 95%
t-interval, the share of seeds where it selected the best, and Spearman's rank correlation
between the criterion and test accuracy across all runs (with a bootstrap 95% interval).
Only seeds that every configuration has are used (the table's extra seeds for its top
configurations would bias the choice).

    python benchmarks/selection_regret.py                        # the default table (parts or assembled)
    python benchmarks/selection_regret.py TABLE.parquet --json   # one JSON object
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CRITERIA = ("val/acc", "val/covering_rate", "val/approx_acc")
RULES = ("best", "last")
DEFAULT_TABLE = Path(__file__).resolve().parent / "data" / "spmi-fmnist-p0.3-l1000-u4000-e60"
NOT_SETTINGS = {"labelled", "unlabelled_size", "seed", "epoch", "epoch_lr", "diverged", "seconds", "cpu_seconds"}


@dataclass(frozen=True)
class Regret:
    """One criterion under one epoch rule (module docstring); points, not fractions."""

    criterion: str
    rule: str
    seeds: int
    configurations: int
    regret: float
    lo: float
    hi: float
    picked_best: float      # share of seeds where the delivered network is the best in hindsight
    spearman: float
    spearman_lo: float
    spearman_hi: float


def read_table(path: Path) -> pd.DataFrame:
    """A table file, or a table folder's finished parts (a table still being built)."""
    if path.is_dir():
        parts = sorted((path / "parts").glob("*.parquet"))
        if not parts:
            raise ValueError(f"{path} holds no finished run yet (parts/*.parquet)")
        return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    if not path.exists() and path.with_suffix(".parquet").exists():
        path = path.with_suffix(".parquet")
    if not path.exists():
        raise ValueError(f"no table at {path}: build one with benchmarks/curves.py")
    return pd.read_parquet(path)


def settings_of(table: pd.DataFrame) -> list[str]:
    """The table's varied settings: the columns without a slash that are not bookkeeping."""
    return [c for c in table.columns if "/" not in c and c not in NOT_SETTINGS
            and table[c].nunique(dropna=False) > 1]


def run_scores(table: pd.DataFrame, criterion: str, rule: str, settings: list[str]) -> pd.DataFrame:
    """One row per run (configuration, seed): the criterion's value and the test accuracy
    at the rule's epoch (a diverged run's: NaN, never selected)."""
    keys = [*settings, "seed"]
    rows = table.dropna(subset=[criterion]) if rule == "best" else table
    if rule == "best":
        at = rows.loc[rows.groupby(keys, dropna=False)[criterion].idxmax()]
    else:
        at = table.loc[table.groupby(keys, dropna=False)["epoch"].idxmax()]
    return at[[*keys, criterion, "test/acc"]].rename(columns={criterion: "criterion", "test/acc": "test"})


def complete_seeds(table: pd.DataFrame, settings: list[str]) -> list[int]:
    """Seeds that every configuration of the table has."""
    configs = table[settings].drop_duplicates()
    per_seed = table.groupby("seed").apply(lambda g: len(g[settings].drop_duplicates()), include_groups=False)
    return sorted(int(s) for s, n in per_seed.items() if n == len(configs))


def t_interval(x: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    from scipy.stats import t
    mean = float(np.mean(x)) if len(x) else math.nan
    if len(x) < 2:
        return mean, math.nan, math.nan
    half = float(t.ppf((1 + level) / 2, len(x) - 1)) * float(np.std(x, ddof=1)) / math.sqrt(len(x))
    return mean, mean - half, mean + half


def spearman(runs: pd.DataFrame, resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Spearman's rho between criterion and test accuracy across runs, with a percentile
    bootstrap 95% interval."""
    from scipy.stats import spearmanr
    ok = runs.dropna(subset=["criterion", "test"])
    if len(ok) < 3:
        return math.nan, math.nan, math.nan
    x, y = ok["criterion"].to_numpy(), ok["test"].to_numpy()
    rho = float(spearmanr(x, y).statistic)
    rng = np.random.default_rng(seed)
    boot = []
    for _ in range(resamples):
        i = rng.integers(0, len(x), len(x))
        if np.ptp(x[i]) > 0 and np.ptp(y[i]) > 0:
            boot.append(spearmanr(x[i], y[i]).statistic)
    lo, hi = np.percentile(boot, [2.5, 97.5]) if boot else (math.nan, math.nan)
    return rho, float(lo), float(hi)


def regrets(table: pd.DataFrame) -> list[Regret]:
    """Every (criterion, rule) of ``CRITERIA`` x ``RULES`` the table has columns for."""
    settings = settings_of(table)
    if not settings:
        raise ValueError("the table varies no setting: nothing to select among")
    seeds = complete_seeds(table, settings)
    if not seeds:
        raise ValueError("no seed holds every configuration yet: let the table's first pass finish")
    table = table[table["seed"].isin(seeds)]
    hindsight = table.groupby("seed")["test/acc"].max()
    out = []
    for criterion in (c for c in CRITERIA if c in table):
        for rule in RULES:
            runs = run_scores(table, criterion, rule, settings)
            regret, hit = [], []
            for seed, group in runs.groupby("seed"):
                ok = group.dropna(subset=["criterion", "test"])
                chosen = ok.loc[ok["criterion"].idxmax(), "test"]
                best = hindsight[seed]
                regret.append(100 * (best - chosen))
                hit.append(chosen == best)
            mean, lo, hi = t_interval(np.asarray(regret))
            rho, rlo, rhi = spearman(runs)
            out.append(Regret(criterion, rule, len(seeds), len(table[settings].drop_duplicates()), mean, lo, hi,
                              float(np.mean(hit)), rho, rlo, rhi))
    return out


def markdown(rows: list[Regret]) -> str:
    head = "| criterion | epoch rule | seeds | configurations | regret (pt) | 95% interval | picked the best | " \
           "Spearman rho (95% interval) |\n|---|---|---|---|---|---|---|---|\n"
    body = "".join(
        f"| {r.criterion} | {r.rule} | {r.seeds} | {r.configurations} | {r.regret:.2f} | [{r.lo:.2f}, {r.hi:.2f}] | "
        f"{r.picked_best:.0%} | {r.spearman:.3f} [{r.spearman_lo:.3f}, {r.spearman_hi:.3f}] |\n" for r in rows)
    return head + body


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/selection_regret.py", description=__doc__.split("\n\n")[0])
    p.add_argument("table", nargs="?", default=str(DEFAULT_TABLE),
                   help="a table file (.parquet) or a table folder whose finished parts are read (default: the "
                        "default table's)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    try:
        rows = regrets(read_table(Path(args.table)))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"table": args.table, "rows": [asdict(r) for r in rows]}, indent=2))
    else:
        print(markdown(rows), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
