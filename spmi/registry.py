"""One registry style for methods, models and datasets: entries register themselves under
unique names (a module per entry, found by importing every module of its package), and a
lookup of an unknown name fails with one line listing the choices."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind. Reads like a mapping (``name in r``, ``r[name]``,
    iteration in sorted order, ``values()``), except that ``get`` raises ``error`` with
    ``unknown <kind> <name>; choose one of: ...`` instead of returning a default.

    ``package`` (dotted name): every module in it is imported before the first lookup,
    so that its entries have registered themselves. ``quote`` writes a name in messages.
    """

    def __init__(self, kind: str, package: str | None = None, *, error: type[Exception] = ValueError,
                 quote: Callable[[object], str] = repr) -> None:
        self.kind, self.package, self.error, self.quote = kind, package, error, quote
        self._entries: dict[str, T] = {}
        self._loaded, self._loading = package is None, False

    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` under ``name``; a name already taken is refused."""
        if name in self._entries:
            old = self._entries[name]
            by = f" by {old.__module__}.{old.__qualname__}" if hasattr(old, "__qualname__") else ""
            raise ValueError(f"{self.kind} {self.quote(name)} is already registered{by}; "
                             "register the new one under another name")
        self._entries[name] = entry
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering the decorated object under ``name``."""

        def decorator(entry: T) -> T:
            return self.add(name, entry)

        return decorator

    def _load(self) -> None:
        if self._loaded or self._loading:  # a module may look entries up while it loads
            return
        self._loading = True
        try:
            assert self.package is not None
            package = importlib.import_module(self.package)
            for module in pkgutil.iter_modules(package.__path__):
                importlib.import_module(f"{self.package}.{module.name}")
            self._loaded = True
        finally:
            self._loading = False

    def get(self, name: object) -> T:
        """The entry ``name``, or ``error`` naming the valid choices."""
        self._load()
        try:
            return self._entries[name]  # type: ignore[index]
        except (KeyError, TypeError):
            raise self.error(f"unknown {self.kind} {self.quote(name)}; choose one of: {', '.join(self.names())}") \
                from None

    def names(self) -> list[str]:
        """Sorted names of all entries."""
        self._load()
        return sorted(self._entries)

    def keys(self) -> list[str]:
        return self.names()

    def values(self) -> list[T]:
        """The entries, in sorted name order."""
        return [self._entries[n] for n in self.names()]

    def items(self) -> list[tuple[str, T]]:
        return [(n, self._entries[n]) for n in self.names()]

    def __getitem__(self, name: str) -> T:
        self._load()
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        self._load()
        try:
            return name in self._entries
        except TypeError:  # unhashable: not a name
            return False

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._load()
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
