"""Registry of training methods. Each module of this package defines and registers one;
adding a method is adding a file here."""

from __future__ import annotations

import importlib
import pkgutil

from spmi.methods.base import Method

METHODS: dict[str, type[Method]] = {}


def register_method(cls: type[Method]) -> type[Method]:
    METHODS[cls.name] = cls
    return cls


def _load_all() -> None:
    for info in pkgutil.iter_modules(__path__):
        if info.name != "base":
            importlib.import_module(f"{__name__}.{info.name}")


def list_methods() -> list[str]:
    _load_all()
    return sorted(METHODS)


def get_method(name: str) -> type[Method]:
    _load_all()
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of: {', '.join(sorted(METHODS))}")
    return METHODS[name]
