"""Reading YAML together with the line of every node, for error messages that point
into the file (``file:line: problem``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

Path_ = tuple[str, ...]


class LocatedError(ValueError):
    """A problem at ``file:line``; ``str()`` is the one-line message."""

    def __init__(self, file: str | Path, line: int | None, message: str):
        self.file, self.line, self.message = str(file), line, message
        where = f"{self.file}:{line}" if line else self.file
        super().__init__(f"{where}: {message}")


class Lines:
    """Line numbers (1-based) of the keys and values of a parsed document, by key path."""

    def __init__(self) -> None:
        self.keys: dict[Path_, int] = {}
        self.values: dict[Path_, int] = {}

    def key(self, path: Path_) -> int | None:
        """Line of the key at ``path`` (or of its nearest ancestor)."""
        while path and path not in self.keys:
            path = path[:-1]
        return self.keys.get(path, self.values.get(path))

    def value(self, path: Path_) -> int | None:
        """Line of the value at ``path`` (or of its nearest known ancestor)."""
        while path and path not in self.values:
            path = path[:-1]
        return self.values.get(path)


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
        _walk(node, (), lines, path)
    return data, lines


def _walk(node: yaml.Node, path: Path_, lines: Lines, file: str | Path) -> None:
    lines.values[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in seen:
                raise LocatedError(file, key_node.start_mark.line + 1, f"duplicate key {key!r}")
            seen.add(key)
            lines.keys[(*path, key)] = key_node.start_mark.line + 1
            _walk(value_node, (*path, key), lines, file)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, (*path, str(i)), lines, file)
