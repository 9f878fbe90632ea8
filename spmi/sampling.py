"""Seeded index streams: a set visited in random order, permutation after permutation,
so that a step always takes a full batch (the labelled set is cycled this way)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class CyclicSampler:
    def __init__(self, n: int, generator: torch.Generator):
        if n <= 0:
            raise ValueError("cannot sample from an empty set")
        self.n, self.generator = n, generator
        self.perm = torch.randperm(n, generator=generator)
        self.pos = 0

    def take(self, count: int) -> Tensor:
        """The next ``count`` indices of the stream (int64, CPU)."""
        parts = []
        while count > 0:
            if self.pos == self.n:
                self.perm, self.pos = torch.randperm(self.n, generator=self.generator), 0
            k = min(count, self.n - self.pos)
            parts.append(self.perm[self.pos:self.pos + k])
            self.pos += k
            count -= k
        return torch.cat(parts)

    def state_dict(self) -> dict[str, Any]:
        return {"perm": self.perm, "pos": self.pos}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.perm, self.pos = state["perm"].clone(), int(state["pos"])
