"""Where an SPMI epoch's time goes, for one dataset/network on the current device.

Times the parts of a step (augmentation; forward/backward/optimiser) over ``--steps``
steps, one full label-channel pass and one evaluation, scales the steps to a whole epoch
and compares the forward/backward FLOP rate with this device's measured matrix-product
peak. Every figure is the best of ``--repeats`` interleaved repeats, and the peak is
measured between them, so that on a shared machine the ratios (peak fraction, shares,
before/after) stay meaningful even when the seconds are not.

``--compare`` also times, interleaved with the current code paths, the paths as they were
before the speed work (unfolded BatchNorm in inference passes; LeNet's ReLU before the
pooling; test set evaluated every epoch) and prints their ratios.

    python benchmarks/epoch_time.py [--device cuda] [--precision bf16] [--steps 20] [--json]
    python benchmarks/epoch_time.py --compare --json          # before/after ratios
    python benchmarks/epoch_time.py --unlabelled-size 2000 --steps 3 --repeats 1 --json  # quick
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from spmi.config import TrainConfig  # noqa: E402
from spmi.data import DataError, load_dataset  # noqa: E402
from spmi.methods.base import Batch  # noqa: E402
from spmi.models.flops import forward_flops  # noqa: E402
from spmi.models.lenet import LeNet  # noqa: E402
from spmi.trainer import Trainer, cpu_has_native_bf16  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device, reps: int = 1) -> float:
    sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    sync(device)
    return (time.perf_counter() - t) / reps


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int = 2048, reps: int | None = None) -> float:
    """FLOP/s of an n x n matrix product (best of a few)."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    a @ b
    reps = reps or (20 if device.type == "cuda" else 3)
    return 2 * n**3 / min(timed(lambda: a @ b, device) for _ in range(reps))


def _lenet_forward_before(self: LeNet, x: torch.Tensor) -> torch.Tensor:
    """LeNet's forward before the speed work (ReLU before the pooling), for --compare."""
    x = self.pool(self.relu(self.bn1(self.conv1(x))))
    x = self.pool(self.relu(self.bn2(self.conv2(x))))
    x = self.relu(self.bn3(self.fc1(torch.flatten(x, 1))))
    return self.fc2(x)


@contextlib.contextmanager
def before(trainer: Trainer) -> Iterator[None]:
    """The trainer's inference and step paths as they were before the speed work."""
    fold, model = trainer.cfg.fold_bn, trainer.model
    trainer.cfg.fold_bn = False
    patched = isinstance(model, LeNet)
    if patched:
        model.forward = _lenet_forward_before.__get__(model)
    try:
        yield
    finally:
        trainer.cfg.fold_bn = fold
        if patched:
            del model.forward


class Steps:
    """Pre-drawn batches and views of ``steps`` training steps at ``epoch``."""

    def __init__(self, trainer: Trainer, epoch: int, steps: int):
        self.trainer, self.epoch, self.steps = trainer, epoch, steps
        dev, B = trainer.device, trainer.cfg.batch_size
        self.lab = trainer.lab_sampler.take(steps * B).view(steps, B).to(dev)
        self.unl = trainer.unl_sampler.take(steps * B).view(steps, B).to(dev)
        self.needs_unl = epoch >= trainer.method.opts.warmup
        self.images = B * (2 if self.needs_unl else 1)
        self.views: list[dict[tuple[str, str], torch.Tensor]] = []

    def augment(self) -> None:
        t, self.views = self.trainer, []
        for s in range(self.steps):
            v = {("lab", "strong"): t.view("lab", "strong", self.lab[s])}
            if self.needs_unl:
                v[("unl", "strong")] = t.view("unl", "strong", self.unl[s])
            self.views.append(v)

    def train(self) -> None:
        t = self.trainer
        t.model.train()
        for s in range(self.steps):
            batch = Batch(self.lab[s], self.unl[s], lambda part, kind, pos, v=self.views[s]: v[(part, kind)])
            t.train_step(batch, self.epoch)


OP_GROUPS = (("conv_linear", ("convolution", "mm", "addmm", "bmm", "linear")), ("batchnorm", ("batch_norm",)),
             ("pool", ("max_pool",)), ("relu", ("relu", "threshold", "clamp")),
             ("loss", ("softmax", "nll", "exp", "gather")))


def profile_steps(st: Steps) -> dict[str, float]:
    """Shares of the SPMI steps' operator time by kind (self CPU time of aten ops)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        st.train()
    shares: dict[str, float] = {}
    for event in prof.key_averages():
        if not event.key.startswith("aten::"):
            continue
        group = next((g for g, words in OP_GROUPS if any(w in event.key for w in words)), "other")
        shares[group] = shares.get(group, 0.0) + event.self_cpu_time_total
    total = sum(shares.values()) or 1.0
    return {g: v / total for g, v in sorted(shares.items(), key=lambda kv: -kv[1])}


def label_pass(trainer: Trainer, epoch: int) -> None:
    trainer.model.eval()
    trainer.method.epoch_start(epoch, trainer.predict)
    trainer.model.train()


class Best:
    """Best-of-k timings of named parts, measured round-robin."""

    def __init__(self, device: torch.device):
        self.device, self.best = device, {}

    def time(self, name: str, fn: Callable[[], Any], per: int = 1) -> None:
        self.best[name] = min(self.best.get(name, float("inf")), timed(fn, self.device) / per)


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        data = load_dataset(args.dataset, args.data_root, verify=not args.no_verify_data)
    except DataError as err:
        raise SystemExit(f"error: {err}") from None
    warmup = 1
    cfg = TrainConfig(dataset=args.dataset, model=args.model, labelled=args.labelled, partial_rate=args.partial_rate,
                      val_size=args.val_size, unlabelled_size=args.unlabelled_size, device=args.device,
                      precision=args.precision, options={"warmup": warmup}, epochs=500,
                      eval_batch_size=args.eval_batch_size, batch_size=args.batch_size)
    trainer = Trainer(cfg, data)
    dev = trainer.device
    steps_epoch = trainer.steps_per_epoch
    steps = min(args.steps, steps_epoch)
    flops_img = forward_flops(trainer.model, trainer.view("lab", "weak", torch.arange(2, device=dev)))
    peak_dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    small = args.precision == "bf16" and dev.type == "cpu" and not cpu_has_native_bf16()
    peak_n = 256 if small else args.peak_size

    warm, spmi = Steps(trainer, 0, steps), Steps(trainer, warmup + 1, steps)
    label_pass(trainer, warmup)  # the first pass initialises the unlabelled sets
    b = Best(dev)
    variants = [("", contextlib.nullcontext)] + ([("before_", lambda: before(trainer))] if args.compare else [])
    peak = 0.0
    for _ in range(args.repeats):
        peak = max(peak, matmul_peak(dev, peak_dtype, peak_n))
        for prefix, ctx in variants:
            with ctx():
                for name, st in (("warm", warm), ("spmi", spmi)):
                    b.time(f"{prefix}{name}_aug", st.augment, steps)
                    st.train()  # warm the kernels for this variant
                    b.time(f"{prefix}{name}_fwdbwd", st.train, steps)
                b.time(f"{prefix}pass", lambda: label_pass(trainer, warmup + 1))
                if prefix:
                    b.time(f"{prefix}eval", lambda: trainer.evaluate(test=True))
                else:
                    b.time("eval_val_test", lambda: trainer.evaluate(test=True))
                    b.time("eval_val_only", lambda: trainer.evaluate(test=False))
    t = b.best
    n_pass = len(trainer.lab_idx) + len(trainer.unl_idx)

    def epoch_figures(prefix: str) -> dict[str, float]:
        warm_s = steps_epoch * (t[f"{prefix}warm_aug"] + t[f"{prefix}warm_fwdbwd"])
        train_s = steps_epoch * (t[f"{prefix}spmi_aug"] + t[f"{prefix}spmi_fwdbwd"])
        spmi_s = train_s + t[f"{prefix}pass"]
        rate = 3 * flops_img * spmi.images / t[f"{prefix}spmi_fwdbwd"]
        return {
            "epoch_seconds_warmup": warm_s, "epoch_seconds_spmi": spmi_s,
            "fwd_bwd_peak_fraction": rate / peak,
            "fwd_bwd_peak_fraction_warmup": 3 * flops_img * warm.images / t[f"{prefix}warm_fwdbwd"] / peak,
            "pass_seconds": t[f"{prefix}pass"], "pass_share": t[f"{prefix}pass"] / spmi_s,
            "pass_peak_fraction": flops_img * n_pass / t[f"{prefix}pass"] / peak,
            "augment_share": steps_epoch * t[f"{prefix}spmi_aug"] / spmi_s,
            "fwd_bwd_share": steps_epoch * t[f"{prefix}spmi_fwdbwd"] / spmi_s,
        }

    out: dict[str, Any] = {
        "device": str(dev), "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU",
        "threads": torch.get_num_threads(), "precision": args.precision, "dataset": args.dataset,
        "model": cfg.model or data.info.model, "batch_size": cfg.batch_size, "eval_batch_size": cfg.eval_batch_size,
        "labelled": len(trainer.lab_idx), "unlabelled": len(trainer.unl_idx), "steps_per_epoch": steps_epoch,
        "steps_timed": steps, "repeats": args.repeats, "forward_mflop_per_image": flops_img / 1e6,
        "peak_gflops": peak / 1e9, "peak_dtype": args.precision, **epoch_figures(""),
        "eval_seconds_val_test": t["eval_val_test"], "eval_seconds_val_only": t["eval_val_only"],
        "eval_share_of_spmi_epoch": t["eval_val_test"] / (epoch_figures("")["epoch_seconds_spmi"]
                                                           + t["eval_val_test"]),
    }
    if args.profile and dev.type == "cpu":
        shares = profile_steps(spmi)
        gemm_at_peak = 3 * flops_img * spmi.images / peak
        rest = t["spmi_fwdbwd"] * (1 - shares.get("conv_linear", 0.0))
        out["profile_shares"] = shares
        # the peak fraction if every conv/linear ran at the peak and everything else took as long as now
        out["fwd_bwd_peak_fraction_bound"] = gemm_at_peak / (gemm_at_peak + rest)
    if args.compare:
        old = epoch_figures("before_")
        out["before"] = {**old, "eval_seconds_val_test": t["before_eval"]}
        out["speedup"] = {
            "pass": t["before_pass"] / t["pass"],
            "spmi_fwd_bwd": t["before_spmi_fwdbwd"] / t["spmi_fwdbwd"],
            "warmup_fwd_bwd": t["before_warm_fwdbwd"] / t["warm_fwdbwd"],
            "epoch_spmi": old["epoch_seconds_spmi"] / out["epoch_seconds_spmi"],
            "epoch_warmup": old["epoch_seconds_warmup"] / out["epoch_seconds_warmup"],
            "eval_before_vs_val_only": t["before_eval"] / t["eval_val_only"],
            "eval_before_vs_val_test": t["before_eval"] / t["eval_val_test"],
        }
    return out


def print_table(r: dict[str, Any]) -> None:
    print(f"device {r['device']} ({r['device_name']}), threads {r['threads']}, precision {r['precision']}, "
          f"{r['dataset']}/{r['model']}, steps/epoch {r['steps_per_epoch']}, N_u {r['unlabelled']}, l {r['labelled']}")
    print(f"forward {r['forward_mflop_per_image']:.1f} MFLOP/image; matrix-product peak {r['peak_gflops']:.1f} GFLOP/s")
    rows = [("", r)] + ([("before", r["before"])] if "before" in r else [])
    for label, f in rows:
        tag = f" [{label}]" if label else ""
        print(f"\nwarm-up epoch{tag}: {f['epoch_seconds_warmup']:.1f} s, forward/backward "
              f"{f['fwd_bwd_peak_fraction_warmup']:.2f} of peak")
        print(f"SPMI epoch{tag}: {f['epoch_seconds_spmi']:.1f} s = augmentation {f['augment_share']:.1%} + "
              f"forward/backward {f['fwd_bwd_share']:.1%} ({f['fwd_bwd_peak_fraction']:.2f} of peak) + "
              f"label-channel pass {f['pass_share']:.1%} ({f['pass_seconds']:.1f} s, "
              f"{f['pass_peak_fraction']:.2f} of peak)")
    print(f"\nevaluation: val+test {r['eval_seconds_val_test']:.2f} s, val only {r['eval_seconds_val_only']:.2f} s")
    if "profile_shares" in r:
        print("SPMI step operator time: " + ", ".join(f"{k} {v:.0%}" for k, v in r["profile_shares"].items())
              + f"; peak fraction with conv/linear at the peak: {r['fwd_bwd_peak_fraction_bound']:.2f}")
    if "speedup" in r:
        print("speed-up (before / now): " + ", ".join(f"{k} {v:.2f}x" for k, v in r["speedup"].items()))
    print("goals: label-channel pass <= 10% of an SPMI epoch; forward/backward >= 0.65 of peak")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fmnist")
    p.add_argument("--model", default=None, help="network (default: the dataset's)")
    p.add_argument("--data-root", default=None)
    p.add_argument("--no-verify-data", action="store_true", help="skip the MD5 check of the dataset files")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: PyTorch's, all cores)")
    p.add_argument("--labelled", type=int, default=4000)
    p.add_argument("--partial-rate", type=float, default=0.3)
    p.add_argument("--val-size", type=int, default=5000)
    p.add_argument("--unlabelled-size", type=int, default=None, help="a subset of the unlabelled images")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--eval-batch-size", type=int, default=TrainConfig.eval_batch_size)
    p.add_argument("--steps", type=int, default=20, help="steps timed per phase (scaled to an epoch)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats; each figure is the best")
    p.add_argument("--peak-size", type=int, default=2048, help="matrix size of the peak measurement")
    p.add_argument("--compare", action="store_true", help="also time the code paths before the speed work")
    p.add_argument("--profile", action="store_true", help="CPU: operator-time shares of the SPMI steps and the "
                   "peak fraction reachable if only the conv/linear layers got faster")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    result = run(args)
    if args.json:
        print(json.dumps(result))
    else:
        print_table(result)


if __name__ == "__main__":
    main()
