"""Collectives used to keep per-image state identical across processes.

``Comm`` is the single-process case (identity); ``spmi.distributed.DistComm`` is the
torch.distributed one. Methods call ``all_gather_cat`` on (index, value) updates.
"""

from __future__ import annotations

from torch import Tensor


class Comm:
    rank: int = 0
    world_size: int = 1

    def all_gather_cat(self, t: Tensor) -> Tensor:
        """Concatenate ``t`` from all ranks along dim 0, in rank order (sizes may differ)."""
        return t

    def all_reduce_sum(self, t: Tensor) -> Tensor:
        """Elementwise sum over ranks (a new tensor; ``t`` is left as it is)."""
        return t

    def shard(self, t: Tensor) -> Tensor:
        """This rank's share of a tensor every rank holds (contiguous block, rank order)."""
        return t

    def broadcast_(self, t: Tensor) -> Tensor:
        """Overwrite ``t`` in place with rank 0's value."""
        return t

    def barrier(self) -> None:
        """Wait until every rank gets here."""
