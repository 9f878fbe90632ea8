"""Atomic checkpoint files: written to a temporary file, then renamed into place."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from spmi.atomic import write_atomic


def save_atomic(state: dict[str, Any], path: str | os.PathLike) -> Path:
    return write_atomic(path, lambda f: torch.save(state, f))


def load(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint on the CPU with ``weights_only=True`` (no arbitrary pickles)."""
    return torch.load(path, map_location="cpu", weights_only=True)
