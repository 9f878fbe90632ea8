"""Where an SPMI epoch's time goes, for Fashion-MNIST/LeNet on the current device.

Times the parts of a step (augmentation; forward/backward/optimiser) over ``--steps``
steps and one full label-channel pass, scales the steps to a whole epoch, and compares the
forward/backward FLOP rate with this device's measured matrix-product peak.

    python benchmarks/epoch_time.py [--device cuda] [--precision bf16] [--steps 20]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from spmi.config import TrainConfig
from spmi.data import DataError, load_dataset
from spmi.methods.base import Batch
from spmi.trainer import Trainer, cpu_has_native_bf16


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, reps: int = 1) -> float:
    sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    sync(device)
    return (time.perf_counter() - t) / reps


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int = 2048) -> float:
    """FLOP/s of an n x n matrix product (best of a few)."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    a @ b
    reps = 20 if device.type == "cuda" else 3
    return 2 * n**3 / min(timed(lambda: a @ b, device) for _ in range(reps))


def forward_flops(model: nn.Module, x: torch.Tensor) -> float:
    """FLOPs (2 x multiply-adds) of one forward of conv and linear layers, per image."""
    total = 0.0

    def hook(mod, inp, out):
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            k = mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
            total += 2 * k * out.numel()
        elif isinstance(mod, nn.Linear):
            total += 2 * mod.in_features * out.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    was = model.training
    model.eval()
    with torch.no_grad():
        model(x)
    model.train(was)
    for h in handles:
        h.remove()
    return total / len(x)


def measure(trainer: Trainer, epoch: int, steps: int) -> dict[str, float]:
    """Seconds per step of augmentation and of forward/backward at ``epoch``."""
    dev, B = trainer.device, trainer.cfg.batch_size
    lab = trainer.lab_sampler.take(steps * B).view(steps, B).to(dev)
    unl = trainer.unl_sampler.take(steps * B).view(steps, B).to(dev)
    needs_unl = epoch >= trainer.method.opts.warmup
    views = []

    def augment():
        views.clear()
        for s in range(steps):
            v = {("lab", "strong"): trainer._view("lab", "strong", lab[s])}
            if needs_unl:
                v[("unl", "strong")] = trainer._view("unl", "strong", unl[s])
            views.append(v)

    aug = timed(augment, dev) / steps
    trainer.model.train()

    def train_steps():
        for s in range(steps):
            batch = Batch(lab[s], unl[s], lambda part, kind, pos, v=views[s]: v[(part, kind)])
            with trainer.autocast():
                loss, _ = trainer.method.loss(trainer.model, batch, epoch)
            trainer.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            trainer.optimizer.step()

    train_steps()  # warm the kernels
    fwdbwd = timed(train_steps, dev) / steps
    return {"aug": aug, "fwdbwd": fwdbwd, "images": B * (2 if needs_unl else 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--steps", type=int, default=20, help="steps timed per phase (scaled to an epoch)")
    p.add_argument("--data-root", default=None)
    args = p.parse_args()
    try:
        data = load_dataset("fmnist", args.data_root)
    except DataError as err:
        raise SystemExit(f"error: {err}") from None
    cfg = TrainConfig(dataset="fmnist", labelled=4000, partial_rate=0.3, device=args.device,
                      precision=args.precision, options={"warmup": 1}, epochs=500)
    trainer = Trainer(cfg, data)
    dev = trainer.device
    print(f"device {dev} ({torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'CPU'}), "
          f"threads {torch.get_num_threads()}, precision {args.precision}, "
          f"steps/epoch {trainer.steps_per_epoch}, N_u {len(trainer.unl_idx)}, l {len(trainer.lab_idx)}")

    flops_img = forward_flops(trainer.model, trainer._view("lab", "weak", torch.arange(8, device=dev)))
    print(f"LeNet forward: {flops_img / 1e6:.1f} MFLOP per image")
    peaks = {"fp32": matmul_peak(dev, torch.float32)}
    if dev.type == "cuda" or cpu_has_native_bf16():
        peaks["bf16"] = matmul_peak(dev, torch.bfloat16)
    else:
        peaks["bf16"] = matmul_peak(dev, torch.bfloat16, n=256)
    for k, v in peaks.items():
        print(f"matrix-product peak {k}: {v / 1e9:.1f} GFLOP/s")

    warm = measure(trainer, 0, args.steps)
    trainer.model.eval()
    pass_s = timed(lambda: trainer.method.epoch_start(1, trainer.predict), dev)
    spmi = measure(trainer, 2, args.steps)
    steps = trainer.steps_per_epoch
    pass_images = len(trainer.lab_idx) + len(trainer.unl_idx)

    peak = peaks[args.precision]
    for name, m, extra in (("warm-up epoch", warm, 0.0), ("SPMI epoch", spmi, pass_s)):
        aug, fb = m["aug"] * steps, m["fwdbwd"] * steps
        total = aug + fb + extra
        rate = 3 * flops_img * m["images"] / m["fwdbwd"]
        print(f"\n{name}: {total:.1f} s = augmentation {aug:.1f} s ({aug / total:.1%}) + "
              f"forward/backward {fb:.1f} s ({fb / total:.1%}) + label-channel pass {extra:.1f} s "
              f"({extra / total:.1%})")
        print(f"  forward/backward: {rate / 1e9:.1f} GFLOP/s = {rate / peak:.2f} of the {args.precision} "
              f"matrix-product peak (3x forward FLOPs, {m['images']} images/step)")
    pass_rate = flops_img * pass_images / pass_s
    print(f"\nlabel-channel pass: {pass_images} images in {pass_s:.1f} s, {pass_rate / 1e9:.1f} GFLOP/s "
          f"({pass_rate / peak:.2f} of peak)")
    print("goals: label-channel pass < 10% and augmentation < 25% of an SPMI epoch; "
          "forward/backward >= 0.5 of peak")


if __name__ == "__main__":
    main()
