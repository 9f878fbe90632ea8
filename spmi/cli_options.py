"""What the command-line tools share: dataclass fields as argparse flags (``lr_min_ratio``
-> ``--lr-min-ratio``), help that shows each default once, and the command's name as it was
called."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from pathlib import Path
from typing import Any

from spmi.options import field_types


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are a single line on stderr (exit 2), no usage dump."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


class DefaultsFormatter(argparse.HelpFormatter):
    """Help in which each flag's default shows once: ``(default: X)`` is added where the
    help text states no default itself and there is a value to show (not None, not an
    off switch)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if default is None or default is False or default == argparse.SUPPRESS or "default" in text.lower():
            return text
        if not action.option_strings and action.nargs not in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return text  # a required positional argument
        return f"{text} (default: %(default)s)"


def invoked_as(module: str, classic: str, like: str | None = None) -> str:
    """How the command of ``module`` (e.g. ``tuning.confirm``) was started, for its usage line
    and the commands it prints: its console script (``spmi-confirm``: ``spmi-`` and the
    module's last part), ``python -m tuning.confirm`` or ``python <the script path as typed>``;
    ``classic`` (its documented form) when its ``main`` is called from other Python code.
    With ``like`` (the running command's module), ``module``'s command the way that one was
    started: the search names the evaluation command as its user started the search."""
    started = like or module
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name in (started, f"{started}.__main__"):
        return f"python -m {module}"
    arg0 = sys.argv[0] if sys.argv else ""
    if Path(arg0).name == "spmi-" + started.rpartition(".")[2]:
        return "spmi-" + module.rpartition(".")[2]
    own = started.replace(".", "/") + ".py"
    if spec is None and arg0.endswith(".py") and Path(arg0).resolve().as_posix().endswith("/" + own):
        if arg0 == own or arg0.endswith("/" + own):
            return f"python {arg0[:len(arg0) - len(own)]}{module.replace('.', '/')}.py"
        return f"python {arg0}" if like is None else classic
    return classic


def add_dataclass_flags(group: Any, cls: type, skip: frozenset[str] = frozenset(),
                        seen: set[str] | None = None, defaults: dict[str, str] | None = None) -> list[str]:
    """Add one flag per field of ``cls`` (default SUPPRESS: only given flags appear in the
    namespace); the help shows the field's default, or ``defaults[name]`` where another
    value takes its place (the dataset's). Returns the field names added."""
    types = field_types(cls)
    added = []
    for f in dataclasses.fields(cls):
        if f.name in skip or (seen is not None and f.name in seen):
            continue
        flag = "--" + f.name.replace("_", "-")
        tp = types[f.name].type
        meta = f.metadata
        help_text = meta.get("help", "")
        if defaults and f.name in defaults:
            help_text += f" (default: {defaults[f.name]})"
        elif f.default is not dataclasses.MISSING and f.default is not None:
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
