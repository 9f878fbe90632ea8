"""The data layer's one error type, below both the registry and the file formats."""

from __future__ import annotations


class DataError(Exception):
    """A dataset is missing, corrupt or misnamed; the message says how to fix it."""
