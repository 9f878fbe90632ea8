"""The SPMI paper's settings (rows of its accuracy table) and its reported test accuracies.

Rows (dataset, l, p) follow docs/notes on the paper: Fashion-MNIST and CIFAR-10 with
l in {1000, 4000}, p = 0.3; SVHN with l = 1000, p = 0.3; CIFAR-100 with l in {5000, 10000},
p = 0.05 (the settings of the authors' README and scripts).

``PAPER_ACCURACY`` maps (dataset, l, p, method) to the paper's test accuracy in percent. It
is empty on purpose: none of the sources at hand (the authors' repository livyf/SPMI, whose
README holds only the title, the project notes, the proceedings abstract) gives the table's
numbers, and a number is never guessed. Give them with ``reproduce.py --paper-numbers
FILE.csv`` (columns dataset, labelled, partial_rate, method, accuracy) or fill the mapping
from the paper (Liu et al., ICML 2024, PMLR 235:31614-31628).
"""

from __future__ import annotations

from pathlib import Path

PAPER_ROWS: dict[str, list[tuple[int, float]]] = {
    "fmnist": [(1000, 0.3), (4000, 0.3)],
    "cifar10": [(1000, 0.3), (4000, 0.3)],
    "svhn": [(1000, 0.3)],
    "cifar100": [(5000, 0.05), (10000, 0.05)],
}
PAPER_METHODS = ["spmi", "proden_fixmatch", "pop_fixmatch", "cc_fixmatch"]
PAPER_ACCURACY: dict[tuple[str, int, float, str], float] = {}


def load_numbers(path: str | Path | None) -> dict[tuple[str, int, float, str], float]:
    """``PAPER_ACCURACY`` updated from a CSV (dataset, labelled, partial_rate, method, accuracy)."""
    numbers = dict(PAPER_ACCURACY)
    if path is None:
        return numbers
    import pandas as pd
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError) as err:
        raise ValueError(f"--paper-numbers {path}: cannot read it ({err})") from None
    need = {"dataset", "labelled", "partial_rate", "method", "accuracy"}
    if not need <= set(frame.columns):
        raise ValueError(f"--paper-numbers {path}: needs the columns {', '.join(sorted(need))}")
    for row in frame.itertuples(index=False):
        numbers[(row.dataset, int(row.labelled), float(row.partial_rate), row.method)] = float(row.accuracy)
    return numbers
