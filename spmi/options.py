"""Validation of plain-dataclass configs through field metadata.

A field may carry ``metadata={"choices": (...)}``, ``{"min": x}``, ``{"max": x}``,
``{"min_exclusive": x}``, ``{"help": "..."}``. ``validate`` checks them (and that every float
is finite: NaN and inf pass no comparison) and raises a one-line ``ValueError`` that names
the field and the allowed values.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any


def option(default: Any, help: str = "", **meta: Any) -> Any:
    """A dataclass field with a default and validation/help metadata."""
    return dataclasses.field(default=default, metadata={"help": help, **meta})


def validate(obj: Any, prefix: str = "") -> None:
    """Check each field of dataclass ``obj`` against its metadata."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if value is None:
            continue
        name = prefix + f.name
        meta = f.metadata
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


def build(cls: type, values: dict[str, Any], what: str) -> Any:
    """Construct dataclass ``cls`` from ``values``; unknown keys are a clear error."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown {what} option(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
    obj = cls(**values)
    validate(obj)
    return obj
