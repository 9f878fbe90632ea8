"""Runs side by side: ``python -m spmi.compare runs/a runs/b --metric test/acc``.

Reads each run folder's ``metrics.jsonl`` (written by ``python -m spmi.train --out``) and
prints one markdown table, a row per epoch and a column per run and metric, then each
run's final val/test accuracy and its test accuracy at the epoch of best val accuracy
(the selection rule a researcher may report without looking at the test set).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from spmi.cli_options import DefaultsFormatter, OneLineParser, invoked_as
from spmi.records import read_jsonl
from spmi.tables import markdown_table

METRICS_FILE = "metrics.jsonl"


def load_runs(folders: Sequence[str | Path]) -> dict[str, list[dict[str, Any]]]:
    """Run name (the folder's name, made unique) -> its records, in epoch order."""
    runs: dict[str, list[dict[str, Any]]] = {}
    for folder in folders:
        path = Path(folder) / METRICS_FILE
        records = read_jsonl(path)
        if not records:
            raise ValueError(f"{folder} holds no {METRICS_FILE} records "
                             "(give the folders passed to `python -m spmi.train --out`)")
        base = name = Path(folder).resolve().name
        k = 2
        while name in runs:
            name, k = f"{base}#{k}", k + 1
        runs[name] = sorted(records, key=lambda r: r["epoch"])
    return runs


def check_metrics(runs: dict[str, list[dict[str, Any]]], metrics: Sequence[str]) -> None:
    """Every metric must be a number that some run records."""
    numeric = {k for recs in runs.values() for r in recs for k, v in r.items()
               if isinstance(v, int | float) and not isinstance(v, bool)}
    for m in metrics:
        if m not in numeric:
            raise ValueError(f"no run records the metric {m!r} (numeric metrics: {', '.join(sorted(numeric))})")


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def table(runs: dict[str, list[dict[str, Any]]], metrics: Sequence[str]) -> str:
    """Markdown table: epoch (1-based) and one column per (run, metric); '–' where absent."""
    by_epoch = {name: {r["epoch"]: r for r in recs} for name, recs in runs.items()}
    epochs = sorted({e for recs in by_epoch.values() for e in recs})
    cols = [(name, m) for name in runs for m in metrics]
    head = [name if len(metrics) == 1 else f"{name} {m}" for name, m in cols]
    rows = ([e + 1, *(by_epoch[name].get(e, {}).get(m) for name, m in cols)] for e in epochs)
    return markdown_table(["epoch", *head], rows, _fmt)


def summary(runs: dict[str, list[dict[str, Any]]]) -> str:
    """Per run: epochs, final val/test accuracy, test accuracy at the best val epoch."""
    out = []
    for name, recs in runs.items():
        evaluated = [r for r in recs if r.get("val/acc") is not None]
        line = f"{name}: {len(recs)} epochs"
        if evaluated:
            last = evaluated[-1]
            best = max(evaluated, key=lambda r: r["val/acc"])  # first epoch among ties
            line += (f", final val {_fmt(last['val/acc'])} test {_fmt(last.get('test/acc'))}"
                     f", best val {_fmt(best['val/acc'])} at epoch {best['epoch'] + 1}"
                     f" (test there {_fmt(best.get('test/acc'))})")
        out.append(line)
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineParser(prog=invoked_as("spmi.compare", "python -m spmi.compare"), formatter_class=DefaultsFormatter,
                           description="Print the per-epoch metrics of training runs side by side.")
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="folders given to spmi.train --out")
    parser.add_argument("--metric", action="append", metavar="NAME",
                        help="metric column(s), repeatable (default: test/acc)")
    args = parser.parse_args(argv)
    metrics = args.metric or ["test/acc"]
    try:
        runs = load_runs(args.runs)
        check_metrics(runs, metrics)
    except ValueError as e:
        parser.error(str(e))
    print(table(runs, metrics))
    print()
    print(summary(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
