"""Mapping dataclass fields onto argparse flags (``lr_min_ratio`` -> ``--lr-min-ratio``)."""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are a single line on stderr (exit 2), no usage dump."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _base_type(tp: Any) -> Any:
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0]
    return tp


def add_dataclass_flags(group: Any, cls: type, skip: frozenset[str] = frozenset(),
                        seen: set[str] | None = None) -> list[str]:
    """Add one flag per field of ``cls`` (default SUPPRESS: only given flags appear in the
    namespace). Returns the field names added."""
    hints = typing.get_type_hints(cls)
    added = []
    for f in dataclasses.fields(cls):
        if f.name in skip or (seen is not None and f.name in seen):
            continue
        flag = "--" + f.name.replace("_", "-")
        tp = _base_type(hints[f.name])
        meta = f.metadata
        help_text = meta.get("help", "")
        if f.default is not dataclasses.MISSING and f.default is not None:
            help_text += f" (default: {f.default})"
        kwargs: dict[str, Any] = {"default": argparse.SUPPRESS, "help": help_text, "dest": f.name}
        if tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = tp
            if "choices" in meta:
                kwargs["choices"] = meta["choices"]
            kwargs["metavar"] = f.name.upper()
        group.add_argument(flag, **kwargs)
        added.append(f.name)
        if seen is not None:
            seen.add(f.name)
    return added
