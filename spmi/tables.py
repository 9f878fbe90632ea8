"""GitHub markdown tables: one header row, a ``---`` rule, a row per record."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any


def markdown_table(header: Sequence[Any], rows: Iterable[Sequence[Any]], cell: Callable[[Any], str] = str) -> str:
    """The table's lines joined by newlines (no final newline). Header entries are written
    with ``str``, row values with ``cell``; a ``|`` inside either is escaped."""
    def line(cells: Iterable[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
    rule = "|" + "|".join("---" for _ in header) + "|"
    return "\n".join([line(map(str, header)), rule, *(line(map(cell, row)) for row in rows)])
