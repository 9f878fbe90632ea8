"""Mapping dataclass fields onto argparse flags (``lr_min_ratio`` -> ``--lr-min-ratio``)."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any

from spmi.options import field_types


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are a single line on stderr (exit 2), no usage dump."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def add_dataclass_flags(group: Any, cls: type, skip: frozenset[str] = frozenset(),
                        seen: set[str] | None = None) -> list[str]:
    """Add one flag per field of ``cls`` (default SUPPRESS: only given flags appear in the
    namespace). Returns the field names added."""
    types = field_types(cls)
    added = []
    for f in dataclasses.fields(cls):
        if f.name in skip or (seen is not None and f.name in seen):
            continue
        flag = "--" + f.name.replace("_", "-")
        tp = types[f.name].type
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
