"""Median time of the weak and strong augmentation of one dataset-like uint8 batch, per
dataset's augmentation policy, on the CPU and (when present) the GPU.

    python benchmarks/augment_time.py [--batch 512] [--reps 20] [--device cpu]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from spmi.augment import Augmenter  # noqa: E402

# name, image shape (channels, height, width), AutoAugment policy of the strong view
CASES = (("fmnist", (1, 28, 28), None), ("cifar10", (3, 32, 32), "cifar10_spmi"), ("svhn", (3, 32, 32), "svhn"))


def median_ms(fn: Callable[[], torch.Tensor], device: torch.device, reps: int = 20) -> float:
    """Median milliseconds per call after two warm-up calls."""
    times = []
    for i in range(reps + 2):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            times.append((time.perf_counter() - t0) * 1000.0)
    return sorted(times)[len(times) // 2]


def benchmark(device: torch.device, name: str, shape: tuple[int, ...], policy: str | None, reps: int = 20) -> str:
    """The line of median weak/strong times for one dataset-like batch of ``shape``."""
    gen = torch.Generator(device=device).manual_seed(0)
    c = shape[1]
    aug = Augmenter([0.5] * c, [0.25] * c, policy)
    imgs = torch.randint(0, 256, shape, generator=gen, device=device, dtype=torch.uint8)
    tw = median_ms(lambda: aug.weak(imgs, gen), device, reps)
    ts = median_ms(lambda: aug.strong(imgs, gen), device, reps)
    return (f"{device.type:4s} threads={torch.get_num_threads()} {name:8s} B={shape[0]} "
            f"weak {tw:7.2f} ms  strong {ts:7.2f} ms")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=512, help="images per batch")
    p.add_argument("--reps", type=int, default=20, help="timed calls per figure (the median is printed)")
    p.add_argument("--device", action="append", choices=("cpu", "cuda"),
                   help="repeatable (default: cpu, and cuda when available)")
    args = p.parse_args(argv)
    devices = args.device or ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for dev in devices:
        for name, shape, policy in CASES:
            print(benchmark(torch.device(dev), name, (args.batch, *shape), policy, args.reps), flush=True)


if __name__ == "__main__":
    main()
