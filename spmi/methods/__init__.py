"""Registry of training methods. Each module of this package defines and registers one;
adding a method is adding a file here."""

from __future__ import annotations

from spmi.methods.base import Method
from spmi.registry import Registry

METHODS: Registry[type[Method]] = Registry("method", __name__)


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator registering a method under its ``name``."""
    return METHODS.add(cls.name, cls)


def list_methods() -> list[str]:
    return METHODS.names()


def get_method(name: str) -> type[Method]:
    return METHODS.get(name)
