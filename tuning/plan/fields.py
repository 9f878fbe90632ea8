"""The names a search may set: the TrainConfig fields and the method's options that their
declaration (``spmi.options``: ``search=``) leaves to searches, with types and limits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from spmi.config import TrainConfig
from spmi.methods import get_method
from spmi.options import coerce as coerce_field
from spmi.options import did_you_mean, field_types, meta, searchable


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


def _specs(cls: type) -> dict[str, FieldSpec]:
    types = field_types(cls)
    return {name: FieldSpec(name, cls, types[name].type, types[name].optional) for name in searchable(cls)}


def field_specs(method: str) -> dict[str, FieldSpec]:
    """Every name a search space or ``--set`` may give for ``method``."""
    return {**_specs(TrainConfig), **_specs(get_method(method).Options)}


def owned_by_search(method: str, name: str) -> str | None:
    """None when a search may set ``name``, or it is no field; else how to set it instead
    (``"; use --max-epochs"``, or ``""`` when the search alone sets it)."""
    for cls in (TrainConfig, get_method(method).Options):
        if name in cls.__dataclass_fields__ and not meta(cls, name).get("search", True):
            flag = meta(cls, name).get("search_flag")
            return f"; use {flag}" if flag else ""
    return None


def nearest_hint(method: str, name: str) -> str:
    """``"; did you mean X?"`` for a name that is no settable field of ``method`` (or ``""``)."""
    return did_you_mean([name], field_specs(method))


def coerce(spec: FieldSpec, value: Any) -> Any:
    """``value`` as the field's type, checked against its limits; ValueError otherwise.

    Numbers written like ``5e-4`` (a string to YAML 1.1) are accepted for float fields."""
    return coerce_field(spec.owner, spec.name, value)
