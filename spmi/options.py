"""What a setting is, declared once on its dataclass field: type, limits, help and role.

``option(default, help, **meta)`` makes the field. Limits: ``choices=(...)``, ``min``,
``max``, ``min_exclusive``, ``max_exclusive`` (``check_fields`` checks them, and that every
float is finite: NaN and inf pass no comparison). Roles:

- ``search=False``: a search may not set it per trial (the search owns it);
  ``search_flag="--max-epochs"`` names the search's own flag that sets it instead.
- ``resume=True``: it may differ between a run and its resumption (it does not change results).
- ``starts="..."``: an epoch before which the named part of the method does not run
  (SPMI's T_w, POP's start); a search's trials must run past it.

``field_types`` is the one reflection of field types (used by the CLI flags, the search's
field specs and ``coerce``). Errors are one-line ``ValueError``s naming the field.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import functools
import math
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


def option(default: Any = dataclasses.MISSING, help: str = "", *, search: bool = True,
           search_flag: str | None = None, resume: bool = False, starts: str | None = None,
           default_factory: Any = dataclasses.MISSING, **limits: Any) -> Any:
    """A dataclass field with a default, its help, its limits and its roles (module doc)."""
    meta = {"help": help, "search": search and search_flag is None, "resume": resume, **limits}
    if search_flag is not None:
        meta["search_flag"] = search_flag
    if starts is not None:
        meta["starts"] = starts
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class FieldType:
    """A field's base type (bool, int, float, str, ...) and whether None is allowed."""

    type: Any
    optional: bool


@functools.cache
def field_types(cls: type) -> dict[str, FieldType]:
    """``{name: FieldType}`` of dataclass ``cls``, from its (string) annotations."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            out[f.name] = FieldType(args[0], len(args) < len(typing.get_args(tp)))
        else:
            out[f.name] = FieldType(tp, False)
    return out


def meta(cls: type, name: str) -> typing.Mapping[str, Any]:
    """The metadata of field ``name`` of ``cls`` (empty when it has none)."""
    f = cls.__dataclass_fields__.get(name)
    return f.metadata if f is not None else {}


def searchable(cls: type) -> list[str]:
    """The fields of ``cls`` that a search may set per trial."""
    return [f.name for f in dataclasses.fields(cls) if f.metadata.get("search", True)]


def resumable(cls: type) -> frozenset[str]:
    """The fields of ``cls`` that may change when a run is resumed."""
    return frozenset(f.name for f in dataclasses.fields(cls) if f.metadata.get("resume", False))


def start_knobs(cls: type) -> list[str]:
    """The fields of ``cls`` that delay the start of a part of the method (``starts=``)."""
    return [f.name for f in dataclasses.fields(cls) if f.metadata.get("starts")]


def did_you_mean(names: Iterable[str], valid: Iterable[str]) -> str:
    """``"; did you mean X?"``: the valid name nearest (difflib) to the first of the mistyped
    ``names`` that has a close one; ``""`` when none is close."""
    valid = list(valid)
    for name in names:
        close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
        if close:
            return f"; did you mean {close[0]}?"
    return ""


def check_fields(obj: Any, skip: Iterable[str] = ()) -> None:
    """Each field of dataclass ``obj`` (but ``skip``) as its type and within its limits, in
    place and in field order; numbers are kept as given (error messages show them so)."""
    types = field_types(type(obj))
    for f in dataclasses.fields(obj):
        if f.name not in skip:
            value = to_type(f.name, types[f.name], getattr(obj, f.name), numbers_as_given=True)
            check_value(f.name, value, f.metadata)
            setattr(obj, f.name, value)


def check_value(name: str, value: Any, meta: typing.Mapping[str, Any]) -> None:
    """``value`` of the field ``name`` against the limits in ``meta``."""
    if value is None:
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{name}={value!r} is not a finite number")
    if "choices" in meta and value not in meta["choices"]:
        raise ValueError(f"{name}={value!r} is not valid; choose one of: {', '.join(map(str, meta['choices']))}")
    if "min" in meta and value < meta["min"]:
        raise ValueError(f"{name}={value!r} is too small; it must be >= {meta['min']}")
    if "max" in meta and value > meta["max"]:
        raise ValueError(f"{name}={value!r} is too large; it must be <= {meta['max']}")
    if "min_exclusive" in meta and value <= meta["min_exclusive"]:
        raise ValueError(f"{name}={value!r} must be > {meta['min_exclusive']}")
    if "max_exclusive" in meta and value >= meta["max_exclusive"]:
        raise ValueError(f"{name}={value!r} must be < {meta['max_exclusive']}")


def to_type(name: str, ftype: FieldType, value: Any, numbers_as_given: bool = False) -> Any:
    """``value`` as the field's type (a number written like ``5e-4``, a string to YAML 1.1,
    is read for a float field, and YAML's true/false for a string field as those words,
    e.g. ``--set val_labels=true``; an int becomes a float unless ``numbers_as_given``, which
    keeps it as error messages show it); ValueError otherwise."""
    tp, given = ftype.type, value
    if value is None and ftype.optional:
        return None
    if tp is str and isinstance(value, bool):  # YAML 1.1 reads the words true/false as booleans
        value = given = str(value).lower()
    if tp is float and isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)
    ok = (isinstance(value, bool) if tp is bool else
          isinstance(value, int) and not isinstance(value, bool) if tp is int else
          isinstance(value, int | float) and not isinstance(value, bool) if tp is float else
          isinstance(value, tp) if isinstance(tp, type) else True)
    if not ok:
        raise ValueError(f"{name} must be {_type_name(tp)}, got {given!r} ({type(given).__name__})")
    return given if numbers_as_given and isinstance(given, int | float) else float(value) if tp is float else value


def coerce(cls: type, name: str, value: Any) -> Any:
    """``value`` for field ``name`` of ``cls``: as its type and within its limits."""
    value = to_type(name, field_types(cls)[name], value)
    check_value(name, value, meta(cls, name))
    return value


def _type_name(tp: Any) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp)))


def build(cls: type, values: dict[str, Any], what: str, near: Iterable[str] = ()) -> Any:
    """Construct dataclass ``cls`` from ``values``; unknown keys are a clear error naming
    the nearest valid key (among the fields and the names ``near``)."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown {what} option(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}"
                         f"{did_you_mean(unknown, [*sorted(names), *near])}")
    obj = cls(**values)
    check_fields(obj)
    return obj
