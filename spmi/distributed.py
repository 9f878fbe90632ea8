"""Multi-process (DDP) training: one process per worker, gloo on CPU, NCCL on CUDA.

Every rank holds the full per-image state. ``DistComm`` provides the collectives the
trainer and the methods use to exchange their updates; ``distribute_model`` synchronises
BatchNorm and wraps the network in DistributedDataParallel; ``spawn`` launches workers
with torch.multiprocessing (``init_from_env`` joins a torchrun-style group instead);
``assert_in_sync`` checks that all ranks hold bitwise-identical state.
"""

from __future__ import annotations

import datetime
import hashlib
import inspect
import os
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from spmi.comm import Comm


def shard_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rows [start, stop) of rank's contiguous block of n rows; blocks tile 0..n in rank order."""
    return n * rank // world_size, n * (rank + 1) // world_size


class DistComm(Comm):
    """``Comm`` over an initialised torch.distributed process group. Tensors travel on
    the group's device (the rank's GPU for NCCL, the CPU for gloo) and come back on
    their own device and dtype; bool tensors travel as uint8."""

    def __init__(self, group: dist.ProcessGroup | None = None):
        self.group = group
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)
        nccl = dist.get_backend(group) == "nccl"
        self.device = torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")

    def _wire(self, t: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        dtype = dtype or (torch.uint8 if t.dtype == torch.bool else t.dtype)
        return t.detach().to(self.device, dtype, copy=True).contiguous()

    def _sizes(self, n: int) -> list[int]:
        mine = torch.tensor([n], dtype=torch.int64, device=self.device)
        sizes = [torch.empty_like(mine) for _ in range(self.world_size)]
        dist.all_gather(sizes, mine, group=self.group)
        return torch.cat(sizes).tolist()

    def all_gather_cat(self, t: Tensor) -> Tensor:
        if t.dim() == 0:
            raise ValueError("all_gather_cat needs a tensor with a row dimension")
        x = self._wire(t)
        sizes = self._sizes(len(x))
        rows = max(sizes)
        padded = torch.cat([x, x.new_zeros((rows - len(x), *x.shape[1:]))])
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded, group=self.group)
        out = torch.cat([p[:n] for p, n in zip(parts, sizes, strict=True)])
        return out.to(t.device, t.dtype)

    def all_reduce_sum(self, t: Tensor) -> Tensor:
        x = self._wire(t, torch.int64 if t.dtype == torch.bool else None)
        dist.all_reduce(x, op=dist.ReduceOp.SUM, group=self.group)
        return x.to(t.device)

    def shard(self, t: Tensor) -> Tensor:
        start, stop = shard_bounds(len(t), self.rank, self.world_size)
        return t[start:stop]

    def broadcast_(self, t: Tensor) -> Tensor:
        x = self._wire(t)
        dist.broadcast(x, src=dist.get_global_rank(self.group, 0) if self.group else 0, group=self.group)
        with torch.no_grad():
            t.copy_(x)
        return t

    def barrier(self) -> None:
        self.all_reduce_sum(torch.zeros(1, device=self.device))


# ---------------------------------------------------------------- synchronised BatchNorm


class _SumOverRanks(torch.autograd.Function):
    """all_reduce(SUM) whose backward all-reduces the gradient (each rank's input feeds
    every rank's output)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        x = x.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return _SumOverRanks.apply(grad)


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the global batch (all ranks), as
    one process would compute them; for devices without ``nn.SyncBatchNorm`` (the CPU).
    In eval mode, or with one rank, it is plain BatchNorm."""

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        xf = x.float()
        total = _SumOverRanks.apply(torch.cat([xf.sum(dims), xf.new_tensor([x.numel() // x.shape[1]])]))
        n, mean = total[-1].detach(), total[:-1] / total[-1].detach()
        centred = xf - mean.view(shape)
        var = _SumOverRanks.apply((centred * centred).sum(dims)) / n
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            self._track(mean.detach(), var.detach(), n)
        return y.to(x.dtype)

    @torch.no_grad()
    def _track(self, mean: Tensor, var: Tensor, n: Tensor) -> None:
        """Running statistics as F.batch_norm updates them (unbiased variance)."""
        self.num_batches_tracked.add_(1)
        m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        self.running_mean.mul_(1.0 - m).add_(mean.to(self.running_mean.dtype), alpha=m)
        unbiased = var * n / (n - 1).clamp_min(1.0)
        self.running_var.mul_(1.0 - m).add_(unbiased.to(self.running_var.dtype), alpha=m)


def _to_global_bn(module: nn.Module) -> nn.Module:
    """``module`` with every BatchNorm replaced by a GlobalBatchNorm sharing its tensors."""
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        out = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats)
        if module.affine:
            out.weight, out.bias = module.weight, module.bias
        if module.track_running_stats:
            out.running_mean, out.running_var = module.running_mean, module.running_var
            out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, _to_global_bn(child))
    return out


def sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """BatchNorm layers synchronised over ranks: nn.SyncBatchNorm on CUDA, GlobalBatchNorm elsewhere."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _to_global_bn(model)


# DDP's flag for re-broadcasting rank 0's buffers at each forward (older torch: broadcast_buffers)
_FORWARD_SYNC_FLAG = ("forward_sync_buffers" if "forward_sync_buffers" in
                      inspect.signature(DistributedDataParallel.__init__).parameters else "broadcast_buffers")


def distribute_model(model: nn.Module, device: torch.device,
                     sync_bn: bool = True) -> tuple[nn.Module, DistributedDataParallel]:
    """(the network, with BatchNorm synchronised if ``sync_bn``; its DDP wrapper, which
    averages gradients). Without ``sync_bn`` DDP hands rank 0's BN buffers to every
    forward; with it the buffers are identical by construction."""
    if sync_bn:
        model = sync_batchnorm(model, device)
    ids = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else None
    return model, DistributedDataParallel(model, device_ids=ids, **{_FORWARD_SYNC_FLAG: not sync_bn})


# ---------------------------------------------------------------- process groups and launching


def init_from_env(device_type: str = "cpu", timeout_s: float | None = None) -> DistComm:
    """Join the group that MASTER_ADDR/MASTER_PORT/RANK/WORLD_SIZE describe (torchrun
    style); on CUDA use NCCL on GPU LOCAL_RANK, otherwise gloo."""
    timeout = datetime.timedelta(seconds=timeout_s) if timeout_s else None
    if device_type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", timeout=timeout, device_id=device)
    else:
        dist.init_process_group("gloo", timeout=timeout)
    return DistComm()


def destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, fn: Callable[..., Any], world_size: int, port: int, device_type: str,
            timeout_s: float | None, results: str, args: tuple) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_WORLD_SIZE=str(world_size))
    if device_type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // world_size))
    comm = init_from_env(device_type, timeout_s)
    try:
        result = fn(comm, *args)
    finally:
        destroy()
    torch.save(result, Path(results) / f"{rank}.pt")


def spawn(fn: Callable[..., Any], world_size: int, *args: Any, device_type: str = "cpu",
          timeout_s: float | None = None) -> list[Any]:
    """Run ``fn(comm, *args)`` in ``world_size`` new processes on one machine (``fn`` and
    ``args`` picklable) and return their results in rank order. A failing worker stops
    the others and raises here."""
    with tempfile.TemporaryDirectory(prefix="spmi-ddp-") as results:
        mp.spawn(_worker, args=(fn, world_size, free_port(), device_type, timeout_s, results, args),
                 nprocs=world_size, join=True)
        return [torch.load(Path(results) / f"{r}.pt", weights_only=False) for r in range(world_size)]


# ---------------------------------------------------------------- state identity across ranks


class StateMismatch(RuntimeError):
    """Ranks hold different training state."""


def state_tensors(trainer: Any) -> dict[str, Tensor]:
    """What every rank must hold identically: the method's state (but its per-rank
    counters), the network's parameters and buffers, the sampler streams."""
    method = trainer.method
    out: dict[str, Tensor] = {}
    for name, value in method.state_dict().items():
        if name in getattr(method, "rank_local", ()):
            continue
        if isinstance(value, (bool, int, float)):
            value = torch.tensor(float(value), dtype=torch.float64)
        if isinstance(value, Tensor):
            out[f"method/{name}"] = value
    out |= {f"model/{k}": v for k, v in trainer.model.state_dict().items()}
    for part, sampler in (("lab", trainer.lab_sampler), ("unl", trainer.unl_sampler)):
        out[f"sampler/{part}"] = torch.cat([sampler.perm, torch.tensor([sampler.pos])])
    return out


def tensor_hash(t: Tensor) -> bytes:
    """SHA-256 of a tensor's dtype, shape and bytes."""
    h = hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.digest()


def state_digest(trainer: Any) -> tuple[list[str], Tensor]:
    """Names of ``state_tensors`` and their hashes [entries, 32] uint8."""
    tensors = state_tensors(trainer)
    raw = b"".join(tensor_hash(t) for t in tensors.values())
    return list(tensors), torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(len(tensors), 32)


def assert_in_sync(trainer: Any, comm: Comm | None = None) -> None:
    """Raise StateMismatch (on every rank) unless all ranks hold bitwise-identical state.
    Collective: every rank calls it. ``comm`` defaults to the trainer's."""
    comm = comm or trainer.comm
    names, digest = state_digest(trainer)
    every = comm.all_gather_cat(digest).view(comm.world_size, len(names), 32)
    differ = (every != every[:1]).any(dim=2).any(dim=0)
    if differ.any():
        bad = [names[i] for i in differ.nonzero().flatten().tolist()]
        raise StateMismatch(f"{len(bad)} state entries differ across {comm.world_size} ranks: {', '.join(bad)}")
