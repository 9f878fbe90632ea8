"""Reading YAML together with the line of every node, for error messages that point
into the file (``file:line: problem``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

Path_ = tuple[str, ...]
Where = tuple[str, int]  # (file, line)


class LocatedError(ValueError):
    """A problem at ``file:line``; ``str()`` is the one-line message."""

    def __init__(self, file: str | Path, line: int | None, message: str):
        self.file, self.line, self.message = str(file), line, message
        where = f"{self.file}:{line}" if line else self.file
        super().__init__(f"{where}: {message}")


class Lines:
    """Where (file, 1-based line) the keys and values of a parsed document are, by key path.
    A document merged from several files (``take``/``drop``) keeps each node's own file."""

    def __init__(self) -> None:
        self.keys: dict[Path_, Where] = {}
        self.values: dict[Path_, Where] = {}

    def key(self, path: Path_) -> Where | None:
        """Where the key at ``path`` (or its nearest ancestor) is."""
        while path and path not in self.keys:
            path = path[:-1]
        return self.keys.get(path, self.values.get(path))

    def value(self, path: Path_) -> Where | None:
        """Where the value at ``path`` (or its nearest known ancestor) is."""
        while path and path not in self.values:
            path = path[:-1]
        return self.values.get(path)

    def drop(self, path: Path_) -> None:
        """Forget ``path`` and everything under it."""
        for table in (self.keys, self.values):
            for p in [p for p in table if p[:len(path)] == path]:
                del table[p]

    def take(self, path: Path_, other: Lines, other_path: Path_, deep: bool = True) -> None:
        """Place ``other``'s entries at ``other_path`` (and, if ``deep``, under it) at ``path``."""
        n = len(other_path)
        for mine, theirs in ((self.keys, other.keys), (self.values, other.values)):
            for p, where in list(theirs.items()):
                if p == other_path or (deep and p[:n] == other_path):
                    mine[(*path, *p[n:])] = where


def load_with_lines(path: str | Path) -> tuple[Any, Lines]:
    """Parse ``path`` (safe YAML); duplicate keys and syntax errors are LocatedErrors."""
    text = Path(path).read_text()
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        raise LocatedError(path, mark.line + 1 if mark else None,
                           f"invalid YAML: {err.problem or err.context}") from None
    except yaml.YAMLError as err:
        raise LocatedError(path, None, f"invalid YAML: {err}") from None
    finally:
        loader.dispose()
    lines = Lines()
    if node is not None:
        _walk(node, (), lines, str(path))
    return data, lines


def _walk(node: yaml.Node, path: Path_, lines: Lines, file: str) -> None:
    lines.values[path] = (file, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in seen:
                raise LocatedError(file, key_node.start_mark.line + 1, f"duplicate key {key!r}")
            seen.add(key)
            lines.keys[(*path, key)] = (file, key_node.start_mark.line + 1)
            _walk(value_node, (*path, key), lines, file)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, (*path, str(i)), lines, file)
