"""The names a search may set: TrainConfig fields and one method's options, with their
types and limits taken from the dataclass metadata (``spmi.options``)."""

from __future__ import annotations

import contextlib
import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any

from spmi.config import TrainConfig
from spmi.methods import get_method
from spmi.options import validate

# TrainConfig fields that a search must not set per trial (the search owns them)
RESERVED = frozenset({"options", "method", "dataset", "out", "progress", "epochs", "device", "eval_every",
                      "checkpoint_every"})


@dataclass(frozen=True)
class FieldSpec:
    """One settable name: where it lives and its base type."""

    name: str
    owner: type          # TrainConfig or the method's Options dataclass
    type: type           # bool, int, float or str
    optional: bool       # None allowed

    @property
    def is_option(self) -> bool:
        return self.owner is not TrainConfig


def _base(tp: Any) -> tuple[type, bool]:
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], len(args) < len(typing.get_args(tp))
    return tp, False


def _specs(cls: type, skip: frozenset[str] = frozenset()) -> dict[str, FieldSpec]:
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        if f.name not in skip:
            tp, optional = _base(hints[f.name])
            out[f.name] = FieldSpec(f.name, cls, tp, optional)
    return out


def field_specs(method: str) -> dict[str, FieldSpec]:
    """Every name a search space or ``--set`` may give for ``method``."""
    return {**_specs(TrainConfig, RESERVED), **_specs(get_method(method).Options)}


def coerce(spec: FieldSpec, value: Any) -> Any:
    """``value`` as the field's type, checked against its limits; ValueError otherwise.

    Numbers written like ``5e-4`` (a string to YAML 1.1) are accepted for float fields."""
    tp = spec.type
    if value is None and spec.optional:
        return None
    if tp is float and isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)
    ok = (isinstance(value, bool) if tp is bool else
          isinstance(value, int) and not isinstance(value, bool) if tp is int else
          isinstance(value, int | float) and not isinstance(value, bool) if tp is float else
          isinstance(value, tp))
    if not ok:
        raise ValueError(f"{spec.name} must be {_type_name(tp)}, got {value!r} ({type(value).__name__})")
    if tp is float:
        value = float(value)
    validate(dataclasses.replace(spec.owner(), **{spec.name: value}))
    return value


def _type_name(tp: type) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(tp, tp.__name__)
