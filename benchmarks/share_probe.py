"""Tightly interleaved figures for a contended machine: one SPMI training step (augmentation
+ forward/backward of 2 x 256 images), one label-channel pass chunk (1024 images, weak view,
inference) and one matrix product, alternated ``--rounds`` times, each timed best-of; then
scaled to a full Fashion-MNIST SPMI epoch (l = 4000: 215 steps, a pass over 59,000 images).
Variants: now, and the paths before the speed work (``epoch_time.before``).

    python benchmarks/share_probe.py [--rounds 20] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.epoch_time import Steps, before, matmul_peak, timed  # noqa: E402
from spmi.config import TrainConfig  # noqa: E402
from spmi.data import load_dataset  # noqa: E402
from spmi.models.flops import forward_flops  # noqa: E402
from spmi.trainer import Trainer  # noqa: E402

FULL_STEPS, FULL_PASS_IMAGES, CHUNK = 215, 59000, 1024


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--data-root", default=None)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    data = load_dataset("fmnist", args.data_root, verify=False)
    cfg = TrainConfig(dataset="fmnist", labelled=4000, unlabelled_size=4000, device="cpu", options={"warmup": 1})
    t = Trainer(cfg, data)
    t.model.eval()
    t.method.epoch_start(1, t.predict)
    flops = forward_flops(t.model, t.view("lab", "weak", torch.arange(2)))
    step = Steps(t, 2, 1)
    chunk = torch.arange(CHUNK) % len(t.unl_idx)

    def one_step() -> None:
        step.augment()
        step.train()

    def one_chunk() -> None:
        model = t.inference_model().eval()
        with torch.inference_mode():
            model(t.view("unl", "weak", chunk))
        t.model.train()

    best: dict[str, float] = {}
    dev = t.device
    for _ in range(args.rounds):
        best["peak"] = max(best.get("peak", 0.0), matmul_peak(dev, torch.float32, 1024, reps=2))
        for prefix, ctx in (("", None), ("before_", before)):
            with ctx(t) if ctx else _null():
                for name, fn in (("step", one_step), ("chunk", one_chunk)):
                    best[prefix + name] = min(best.get(prefix + name, float("inf")), timed(fn, dev))
    out = {"threads": torch.get_num_threads(), "rounds": args.rounds, "peak_gflops": best["peak"] / 1e9}
    for prefix in ("", "before_"):
        pass_s = FULL_PASS_IMAGES / CHUNK * best[prefix + "chunk"]
        epoch = FULL_STEPS * best[prefix + "step"] + pass_s
        out[prefix + "figures"] = {
            "step_seconds": best[prefix + "step"], "pass_chunk_seconds": best[prefix + "chunk"],
            "epoch_seconds_spmi": epoch, "pass_share": pass_s / epoch,
            "step_peak_fraction": 3 * flops * 512 / best[prefix + "step"] / best["peak"],
            "pass_peak_fraction": flops * CHUNK / best[prefix + "chunk"] / best["peak"]}
    out["speedup"] = {k: best["before_" + k] / best[k] for k in ("step", "chunk")}
    print(json.dumps(out) if args.json else json.dumps(out, indent=1))


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *a):
        return False


if __name__ == "__main__":
    main()
