"""What a search will cost: pure estimates from ASHA's rung schedule and epoch times.

ASHA (Ray's ``ASHAScheduler``) records a trial at rungs grace * rf^k <= max_t and lets it
continue past a rung when its result is in the top 1/rf of those recorded there; the
estimates use that asymptotic promotion rate, so a fresh trial runs
grace + sum_k (next_k - rung_k) / rf^(k+1) epochs on average.
"""

from __future__ import annotations

import math
import os
import re
import time
from dataclasses import dataclass
from typing import Any

DAY_S = 24 * 3600.0
# share of the matrix-product peak a CPU epoch reaches (benchmarks/epoch_time.py)
CPU_EFFICIENCY = 0.5


@dataclass(frozen=True)
class Asha:
    max_t: int
    grace: int
    rf: int

    def rungs(self) -> list[int]:
        """Milestones in epochs, ascending, as Ray's ASHAScheduler computes them."""
        n = int(math.log(self.max_t / self.grace) / math.log(self.rf) + 1)
        return [self.grace * self.rf**k for k in range(n)]

    def remaining_epochs(self, done: int) -> float:
        """Expected epochs still to run for a trial alive after ``done`` epochs (a rung
        at ``done`` itself counts as passed: the trial is still running)."""
        if done >= self.max_t:
            return 0.0
        bounds = [0, *(r for r in self.rungs() if r < self.max_t), self.max_t]
        total, survive = 0.0, 1.0
        for start, end in zip(bounds, bounds[1:], strict=False):
            if start > done:  # a rung ahead: only 1/rf of the trials reaching it go on
                survive /= self.rf
            if end > done:
                total += survive * (end - max(start, done))
        return total

    def expected_epochs(self) -> float:
        """Expected epochs of a trial from its start."""
        return self.remaining_epochs(0)


def remaining_seconds(asha: Asha, epoch_seconds: float, running: list[int], not_started: int,
                      concurrency: int) -> float:
    """Wall seconds left: the expected epochs of the running trials (``running``: their
    epochs done) and of ``not_started`` trials, spread over ``concurrency`` slots, but at
    least the longest expected remainder of one running trial."""
    left = [asha.remaining_epochs(e) for e in running]
    work = sum(left) + not_started * asha.expected_epochs()
    slots = max(1, min(concurrency, len(running) + not_started))
    return epoch_seconds * max(work / slots, max(left, default=0.0))


def rough_epoch_seconds(gflop: float, labelled: int, unlabelled: int, batch_size: int, eval_images: int,
                        flops_per_second: float) -> float:
    """A rough SPMI epoch from the network's forward GFLOPs per image (``spmi.models.flops``):
    ceil(max(l, N_u) / B) steps of 2B images trained (3x a forward), the label-channel pass
    over l + N_u images and an evaluation of ``eval_images``, at ``flops_per_second``."""
    steps = -(-max(labelled, unlabelled) // batch_size)
    images = 3 * steps * 2 * batch_size + labelled + unlabelled + eval_images
    return gflop * 1e9 * images / flops_per_second


def start_message(plan: Any, core_flops: float) -> list[str]:
    """The rough estimate of a CPU search (a ``SearchPlan``) before it starts, at
    ``core_flops`` matrix-product FLOP/s per core; beyond a day, how to make it fit."""
    from spmi.data import get_info
    from spmi.models.flops import model_gflop
    cfg = plan.base_config  # resolved: the dataset's settings filled in
    info = get_info(plan.dataset)  # its real train/test sizes: the estimate comes before any data is loaded
    n_train, n_test = info.train_size, info.test_size
    gflop = model_gflop(cfg.model or info.model, info.num_classes, info.channels, info.size)
    epoch = rough_epoch_seconds(gflop, cfg.labelled,
                                cfg.unlabelled_size or n_train - cfg.val_size, cfg.batch_size,
                                cfg.val_size + n_test, CPU_EFFICIENCY * core_flops * plan.cpus_per_trial)
    at_once = plan.max_concurrent or max(1, (os.cpu_count() or 1) // plan.cpus_per_trial)
    asha = Asha(plan.max_epochs, plan.grace_period, plan.reduction_factor)
    total = remaining_seconds(asha, epoch, [], plan.num_samples, at_once)
    lines = [f"[search] rough estimate: {format_duration(total)} ({plan.num_samples} trials x "
             f"~{asha.expected_epochs():.0f} epochs each under ASHA, ~{format_duration(epoch)} per epoch, "
             f"{at_once} at once)"]
    if total > DAY_S:
        lines.append("[search] that is more than a day on this CPU-only machine: --preset quick (a short demo), "
                     "--max-epochs N (shorter trials) or --time-budget 2h (stops there, resumable) make it fit")
    return lines


def core_matmul_flops(n: int = 512, reps: int = 5) -> float:
    """Measured FLOP/s of one core on an n x n matrix product (best of ``reps``)."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a = torch.randn(n, n)
        best = float("inf")
        for _ in range(reps):
            t = time.perf_counter()
            a @ a
            best = min(best, time.perf_counter() - t)
    finally:
        torch.set_num_threads(threads)
    return 2 * n**3 / best


def format_duration(seconds: float) -> str:
    """``42 s``, ``17 min``, ``3.4 h``, ``12 days``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * DAY_S:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / DAY_S:.0f} days"


_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``2h``, ``1.5h``, ``1d``, ``1h30m`` -> seconds (> 0)."""
    parts = re.fullmatch(r"\s*((?:\d+(?:\.\d+)?\s*(?:s|min|m|h|d)?\s*)+)", text.lower())
    if not parts:
        raise ValueError(f"--time-budget {text!r}: write a duration such as 90s, 15m, 2h or 1h30m")
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*(min|s|m|h|d)?", text.lower()):
        total += float(number) * _UNITS[unit or "s"]
    if total <= 0:
        raise ValueError(f"--time-budget {text!r} must be longer than 0 s")
    return total
