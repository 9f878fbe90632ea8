"""The training loop shared by every method.

Data stay on the device as uint8; each step augments its batch there. Per epoch: the
method's epoch hook (SPMI's label channel), ceil(max(l, N_u)/B) steps of B labelled +
B unlabelled images, evaluation, a metrics record for the callbacks, a checkpoint.

With a ``DistComm`` (several processes) every rank draws the same global batches and
takes its shard; the network is wrapped in DDP (``step_model``) with synchronised
BatchNorm; label-channel passes and evaluation are sharded and gathered / reduced, so
every rank holds the same state and metrics; rank 0 writes the checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import pickle
import time
import warnings
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from spmi import checkpoint as ckpt
from spmi.augment import Augmenter
from spmi.comm import Comm
from spmi.config import TrainConfig, resolved, superclass_table
from spmi.data import ImageData, SSPLLSplit, make_split
from spmi.device import resolve_device
from spmi.distributed import distribute_model
from spmi.evaluate import count_correct, score_sums
from spmi.methods import get_method
from spmi.methods.base import Batch, MethodContext
from spmi.models import create_model
from spmi.models.fold import fold_batchnorm
from spmi.optim import build_optimizer, cosine_lr, set_lr
from spmi.options import build, resumable
from spmi.sampling import CyclicSampler

Callback = Callable[[dict[str, Any], "Trainer"], None]
CHECKPOINT_NAME = "checkpoint.pt"
# single process: steps between checks of the running loss (a device sync each)
DIVERGENCE_CHECK_STEPS = 8


class Diverged(ArithmeticError):
    """The training loss became NaN or infinite: the run cannot continue."""

    def __init__(self, epoch: int, step: int | None, value: float):
        self.epoch, self.step, self.value = epoch, step, value
        where = f"epoch {epoch + 1}" + (f" (by step {step + 1})" if step is not None else "")
        super().__init__(f"the training loss is not finite ({value}) in {where}: the run diverged; "
                         f"lower --lr or check the inputs")


def subsample_unlabelled(split: SSPLLSplit, size: int | None, seed: int) -> SSPLLSplit:
    """Keep a seeded random subset of ``size`` unlabelled images (all when None)."""
    if size is None or size >= len(split.unlabelled_idx):
        return split
    g = torch.Generator().manual_seed(seed + 7)
    keep = torch.randperm(len(split.unlabelled_idx), generator=g)[:size].sort().values
    return dataclasses.replace(split, unlabelled_idx=split.unlabelled_idx[keep])


@dataclass(frozen=True)
class EvalSet:
    """Training-set images evaluated every epoch, and their candidate sets (bool [n, c])."""

    idx: Tensor
    candidates: Tensor


def validation_sets(split: SSPLLSplit) -> dict[str, EvalSet]:
    """The validation sets by metric prefix. ``val`` is the set a search selects on: the
    images carved from the labelled budget when there are any, else the held-out ones.
    With both, the held-out images are ``holdout`` (measurement only)."""
    held = EvalSet(split.val_idx, split.val_candidates)
    if len(split.carved_idx) == 0:
        return {"val": held}
    carved = EvalSet(split.carved_idx, split.carved_candidates)
    return {"val": carved, "holdout": held} if len(split.val_idx) else {"val": carved}


def superclasses(cfg: TrainConfig) -> Tensor | None:
    """Each class's superclass when the partial labels are hierarchical, else None."""
    table = superclass_table(cfg)
    return None if table is None else torch.tensor(table)


class Trainer:
    """``model`` is the network (saved, evaluated, used by the label-channel pass);
    ``step_model`` is what training steps call: its DDP wrapper under several processes
    (``sync_bn``: BatchNorm statistics over the global batch), ``model`` otherwise.
    ``cfg`` is taken as it is when ``resolve`` made it; any other config is resolved here."""

    def __init__(self, cfg: TrainConfig, data: ImageData, callbacks: Iterable[Callback] = (),
                 comm: Comm | None = None, split: SSPLLSplit | None = None, sync_bn: bool = True):
        cfg = resolved(cfg)
        self.cfg, self.data, self.comm = cfg, data, comm or Comm()
        self.callbacks = list(callbacks)
        self.device = resolve_device(cfg.device)
        info = data.info
        self.num_classes = info.num_classes
        method_cls = get_method(cfg.method)

        self.split = split or subsample_unlabelled(
            make_split(data.train_y, info.num_classes, cfg.labelled, cfg.partial_rate, cfg.val_size,
                       cfg.seed, cfg.include_labelled, superclasses(cfg), cfg.val_from_labelled, cfg.val_labels),
            cfg.unlabelled_size, cfg.seed)
        dev = self.device
        self.train_x = data.train_x.to(dev)
        self.train_y = data.train_y.to(dev)
        self.test_x, self.test_y = data.test_x.to(dev), data.test_y.to(dev)
        self.lab_idx = self.split.labelled_idx.to(dev)
        self.unl_idx = self.split.unlabelled_idx.to(dev)
        self.val_idx = self.split.val_idx.to(dev)
        self.eval_sets = {name: EvalSet(e.idx.to(dev), e.candidates.to(dev))
                          for name, e in validation_sets(self.split).items()}

        torch.manual_seed(cfg.seed)
        self.model = create_model(cfg.model or info.model, info.num_classes, info.channels).to(dev)
        self.channels_last = cfg.channels_last
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.step_model: torch.nn.Module = self.model
        if self.comm.world_size > 1:
            self.model, self.step_model = distribute_model(self.model, dev, sync_bn)
        if cfg.precision == "bf16" and dev.type == "cpu" and not cpu_has_native_bf16():
            warnings.warn("bf16 on this CPU has no native support (no AVX512-BF16/AMX) and runs far slower "
                          "than fp32; use --precision fp32", stacklevel=2)
        self.optimizer = build_optimizer(self.model, cfg.lr, cfg.momentum, cfg.weight_decay)
        self.augmenter = Augmenter(info.mean, info.std, None if cfg.augment == "none" else cfg.augment)

        lookup = torch.full((len(data.train_y),), -1, dtype=torch.int64, device=dev)
        lookup[self.lab_idx] = torch.arange(len(self.lab_idx), device=dev)
        self.method = method_cls(cfg.options, MethodContext(
            num_classes=info.num_classes, device=dev, candidates=self.split.candidates.to(dev),
            lab_targets=self.train_y[self.lab_idx], unl_targets=self.train_y[self.unl_idx],
            unl_to_lab=lookup[self.unl_idx], epochs=cfg.epochs, comm=self.comm))

        self.sample_gen = torch.Generator().manual_seed(cfg.seed + 1)
        self.aug_gen = torch.Generator(device=dev).manual_seed(cfg.seed + 2 + 1000 * self.comm.rank)
        self.lab_sampler = CyclicSampler(len(self.lab_idx), self.sample_gen)
        self.unl_sampler = CyclicSampler(len(self.unl_idx), self.sample_gen)
        self.steps_per_epoch = -(-max(len(self.lab_idx), len(self.unl_idx)) // cfg.batch_size)
        self.epoch = 0
        self.last_eval: dict[str, float] = {}
        self.best_val = float("-inf")  # the best val/acc so far (eval_test="best")

    # -- helpers -------------------------------------------------------------------
    def autocast(self) -> contextlib.AbstractContextManager:
        if self.cfg.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _layout(self, x: Tensor) -> Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def view(self, part: str, kind: str, pos: Tensor) -> Tensor:
        """The ``kind`` ("weak" | "strong") augmented view of the images at positions
        ``pos`` of the ``part`` ("lab" | "unl") set, in the network's memory layout."""
        idx = (self.lab_idx if part == "lab" else self.unl_idx)[pos]
        augment = self.augmenter.weak if kind == "weak" else self.augmenter.strong
        return self._layout(augment(self.train_x[idx], self.aug_gen))

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def inference_model(self) -> torch.nn.Module:
        """The network for inference passes: an eval-mode copy with BatchNorm folded into
        the layers before it (``fold_bn``), else the network itself (the caller sets eval)."""
        return fold_batchnorm(self.model, self.channels_last) if self.cfg.fold_bn else self.model

    @torch.inference_mode()
    def predict(self, part: str, model: torch.nn.Module | None = None) -> Tensor:
        """Softmax outputs of the whole labelled or unlabelled set (weak view, eval mode;
        ``model``: an ``inference_model()`` to reuse); every rank computes its shard and
        receives the full, ordered result."""
        model = model if model is not None else self.inference_model()
        idx = self.comm.shard(self.lab_idx if part == "lab" else self.unl_idx)
        out = []
        for chunk in idx.split(self.cfg.eval_batch_size):
            x = self._layout(self.augmenter.weak(self.train_x[chunk], self.aug_gen))
            with self.autocast():
                logits = model(x)
            out.append(torch.softmax(logits.float(), dim=1))
        probs = torch.cat(out) if out else torch.empty(0, self.num_classes, device=self.device)
        return self.comm.all_gather_cat(probs)

    def _accuracy(self, model: torch.nn.Module, x: Tensor, y: Tensor) -> float:
        """Accuracy on (x, y); each rank counts its shard, the counts are summed."""
        if len(y) == 0:
            return float("nan")
        shard = self.comm.shard
        correct = count_correct(model, shard(x), shard(y), lambda b: self._layout(self.augmenter.plain(b)),
                                self.cfg.eval_batch_size, self.autocast)
        return int(self.comm.all_reduce_sum(correct)) / len(y)

    def _set_scores(self, model: torch.nn.Module, prefix: str, images: EvalSet) -> dict[str, float]:
        """``prefix``/acc, /covering_rate and /approx_acc of one validation set, in one pass
        (``spmi.metrics``); each rank scores its shard, the sums are summed; NaN when empty."""
        n = len(images.idx)
        names = (f"{prefix}/acc", f"{prefix}/covering_rate", f"{prefix}/approx_acc")
        if n == 0:
            return dict.fromkeys(names, float("nan"))
        idx = self.comm.shard(images.idx)
        sums = score_sums(model, self.train_x[idx], self.train_y[idx], self.comm.shard(images.candidates),
                          lambda b: self._layout(self.augmenter.plain(b)), self.cfg.eval_batch_size, self.autocast)
        correct, cover, approx = self.comm.all_reduce_sum(sums).tolist()
        return {names[0]: int(correct) / n, names[1]: cover / n, names[2]: approx / n}

    def validate(self, model: torch.nn.Module | None = None) -> dict[str, float]:
        """The validation sets' metrics (``validation_sets``): val/acc (true labels: the
        oracle), val/covering_rate and val/approx_acc (the candidate sets only); holdout/*
        likewise when the held-out images are kept for measurement."""
        model = model if model is not None else self.inference_model()
        out: dict[str, float] = {}
        for prefix, images in self.eval_sets.items():
            out |= self._set_scores(model, prefix, images)
        return out

    def evaluate(self, test: bool = True) -> dict[str, float]:
        """The validation metrics (``validate``), and test/acc when ``test``."""
        model = self.inference_model()
        out = self.validate(model)
        if test:
            out["test/acc"] = self._accuracy(model, self.test_x, self.test_y)
        return out

    def test_accuracy(self, weights: dict[str, Tensor] | None = None) -> float:
        """Test accuracy of the network, or of ``weights`` (a state dict of it, e.g. a kept
        best epoch's) loaded for this pass only. Collective under several processes: every
        rank calls it with the same weights."""
        if weights is None:
            return self._accuracy(self.inference_model(), self.test_x, self.test_y)
        current = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.model.load_state_dict(weights)
        try:
            return self._accuracy(self.inference_model(), self.test_x, self.test_y)
        finally:
            self.model.load_state_dict(current)

    def _epoch_evaluation(self, last: bool) -> dict[str, float]:
        """This epoch's evaluation. Under ``eval_test`` best/end the test set is measured
        only at a new best val/acc (best) and at the last epoch; in between the latest
        test/acc is carried, and ``test/epoch`` names the epoch it was measured at."""
        mode = self.cfg.eval_test
        model = self.inference_model()
        out = self.validate(model)
        new_best = out["val/acc"] > self.best_val  # NaN (no validation set) is never a best
        if new_best:
            self.best_val = out["val/acc"]
        if mode == "every" or last or (mode == "best" and new_best):
            out["test/acc"] = self._accuracy(model, self.test_x, self.test_y)
            if mode != "every":
                out["test/epoch"] = self.epoch
        else:
            out |= {k: self.last_eval[k] for k in ("test/acc", "test/epoch") if k in self.last_eval}
        return out

    def _sync_buffers(self) -> None:
        """Give every rank rank 0's BatchNorm buffers (differ only without sync_bn)."""
        if self.comm.world_size > 1:
            for buf in self.model.buffers():
                self.comm.broadcast_(buf)

    # -- one epoch -----------------------------------------------------------------
    def train_step(self, batch: Batch, epoch: int) -> tuple[Tensor, dict[str, Tensor]]:
        """One optimiser step on ``batch`` at ``epoch`` (the caller sets the learning rate
        and train mode): the method's loss through ``step_model`` under the precision's
        autocast, backward, step. Returns the detached loss and the method's loss parts."""
        with self.autocast():
            loss, parts = self.method.loss(self.step_model, batch, epoch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach(), parts

    def train_epoch(self) -> dict[str, Any]:
        cfg, epoch = self.cfg, self.epoch
        lr = cosine_lr(epoch, cfg.epochs, cfg.lr, cfg.lr_min_ratio)
        set_lr(self.optimizer, lr)
        t0 = time.perf_counter()

        self.step_model.eval()
        self.method.epoch_start(epoch, self.predict)
        self._sync()
        t1 = time.perf_counter()

        self.step_model.train()
        steps, B = self.steps_per_epoch, cfg.batch_size
        lab_pos = self.lab_sampler.take(steps * B).view(steps, B).to(self.device)
        unl_pos = self.unl_sampler.take(steps * B).view(steps, B).to(self.device)
        sums: dict[str, Tensor] = {}
        bar = _progress(steps, f"epoch {epoch + 1}/{cfg.epochs}", cfg.progress and self.comm.rank == 0)
        for step in range(steps):
            batch = Batch(self.comm.shard(lab_pos[step]), self.comm.shard(unl_pos[step]), self.view)
            loss, parts = self.train_step(batch, epoch)
            for name, value in {"total": loss, **parts}.items():
                sums[name] = sums.get(name, 0.0) + value.float()
            if bar is not None:
                bar.update(1)
            if self.comm.world_size == 1 and (step + 1) % DIVERGENCE_CHECK_STEPS == 0:
                _check_finite(float(sums["total"]), epoch, step)
        if bar is not None:
            bar.close()
        losses = {f"loss/{k}": float(self.comm.all_reduce_sum(v / steps)) / self.comm.world_size
                  for k, v in sums.items()}
        # reduced over the ranks: every rank takes the same decision
        _check_finite(losses["loss/total"], epoch, None)
        self._sync_buffers()
        self._sync()
        t2 = time.perf_counter()

        last = epoch + 1 == cfg.epochs
        if (epoch + 1) % cfg.eval_every == 0 or last:
            self.last_eval = self._epoch_evaluation(last)
        t3 = time.perf_counter()
        self.epoch += 1
        return {"epoch": epoch, "lr": lr, **losses, **self.last_eval, **self.method.diagnostics(),
                "time/label_channel": t1 - t0, "time/train": t2 - t1, "time/eval": t3 - t2,
                "seconds": t3 - t0}

    def fit(self) -> dict[str, Any]:
        """Train until ``cfg.epochs``; returns the last epoch's metrics. The callbacks (the
        records) see an epoch before its checkpoint is written, so a run killed in between
        resumes from the previous checkpoint and its records are cut back to it. A
        non-finite loss raises ``Diverged``; that epoch is neither recorded nor saved."""
        metrics: dict[str, Any] = {}
        while self.epoch < self.cfg.epochs:
            metrics = self.train_epoch()
            for callback in self.callbacks:
                callback(metrics, self)
            if self.cfg.out and (self.epoch % self.cfg.checkpoint_every == 0 or self.epoch == self.cfg.epochs):
                self.save(Path(self.cfg.out) / CHECKPOINT_NAME)
        return metrics

    # -- checkpoints ---------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        rng = {"sample": self.sample_gen.get_state(), "aug": self.aug_gen.get_state(),
               "torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        if self.comm.world_size > 1:  # each rank's augmentation stream
            rng["aug_ranks"] = self.comm.all_gather_cat(rng["aug"].unsqueeze(0))
        return {
            "version": 1, "config": self.cfg.to_dict(), "epoch": self.epoch, "data_checksum": self.data.checksum,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "method": self.method.state_dict(), "split": dataclasses.asdict(self.split),
            "samplers": {"lab": self.lab_sampler.state_dict(), "unl": self.unl_sampler.state_dict()},
            "rng": rng, "last_eval": dict(self.last_eval), "best_val": self.best_val,
        }

    def load_state_dict(self, state: dict[str, Any], allow_schedule_change: bool = False) -> None:
        check_compatible(self.cfg.to_dict(), self._comparable(state["config"]), allow_schedule_change)
        if state["data_checksum"] != self.data.checksum:
            raise ValueError("the checkpoint was trained on other data (checksum differs); use its dataset files")
        for name, saved in state["split"].items():
            if not torch.equal(getattr(self.split, name).cpu(), saved):
                raise ValueError(f"the checkpoint's data split differs ({name}); resume with the same seed and sizes")
        self.epoch = int(state["epoch"])
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.method.load_state_dict(state["method"])
        self.lab_sampler.load_state_dict(state["samplers"]["lab"])
        self.unl_sampler.load_state_dict(state["samplers"]["unl"])
        self.sample_gen.set_state(state["rng"]["sample"])
        self._load_aug_state(state["rng"])
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
        self.last_eval = dict(state["last_eval"])
        self.best_val = float(state.get("best_val", float("-inf")))

    def _load_aug_state(self, rng: dict[str, Tensor]) -> None:
        """This rank's augmentation stream; from a checkpoint of another world size rank 0
        takes the saved rank 0 stream and the other ranks keep their own seeding."""
        per_rank = rng.get("aug_ranks")
        if per_rank is not None and len(per_rank) == self.comm.world_size:
            self.aug_gen.set_state(per_rank[self.comm.rank].clone())
        elif self.comm.rank == 0:
            self.aug_gen.set_state(rng["aug"])

    def save(self, path: str | Path) -> Path:
        """Write the checkpoint. Collective under several processes: every rank calls it,
        rank 0 writes, and it returns once the file is in place."""
        state = self.state_dict()
        if self.comm.rank == 0:
            ckpt.save_atomic(state, path)
        self.comm.barrier()
        return Path(path)

    def load(self, path: str | Path, allow_schedule_change: bool = False) -> None:
        """Resume from the checkpoint at ``path`` (ValueError when unreadable or made with
        other settings; a changed ``epochs`` only with ``allow_schedule_change``)."""
        try:
            state = ckpt.load(path)
        except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as err:
            raise ValueError(f"the checkpoint {path} is unreadable (truncated or not a checkpoint: "
                             f"{type(err).__name__}); restore it, or start the run again elsewhere") from None
        if not isinstance(state, dict) or not {"config", "epoch", "model"} <= state.keys():
            raise ValueError(f"the checkpoint {path} is not a checkpoint of this trainer")
        self.load_state_dict(state, allow_schedule_change)

    def _comparable(self, config: dict[str, Any]) -> dict[str, Any]:
        """A saved config with its method options' defaults filled in (as the resolved
        current config has them), so that a flag which only restates a default is no change;
        a field the checkpoint predates takes its default (defaults keep earlier behaviour)."""
        config = dict(config)
        for f in dataclasses.fields(TrainConfig):  # a setting newer than the checkpoint: the run had its default
            if f.name not in config and f.default is not dataclasses.MISSING:
                config[f.name] = f.default
        try:
            opts = build(get_method(config.get("method", self.cfg.method)).Options, config.get("options", {}),
                         config.get("method", self.cfg.method))
            config["options"] = dataclasses.asdict(opts)
        except ValueError:
            pass  # an option of another version or method: compared as written
        return config


def check_compatible(current: dict[str, Any], saved: dict[str, Any], allow_schedule_change: bool = False) -> None:
    """A checkpoint resumes only a run with the same result-determining settings. The
    number of epochs sets the cosine schedule's length: changing it changes the run, so it
    is refused unless ``allow_schedule_change`` (or the schedule is flat)."""
    current, saved = _flat_options(current), _flat_options(saved)
    flat = current.get("lr_min_ratio") == 1.0 and saved.get("lr_min_ratio") == 1.0
    may_change = resumable(TrainConfig) | _resumable_options(current.get("method")) | (
        {"epochs"} if allow_schedule_change or flat else set())
    differ = sorted(k for k in current.keys() | saved.keys()
                    if k not in may_change and current.get(k) != saved.get(k))
    if differ:
        detail = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in differ)
        hint = ("; --allow-schedule-change accepts another --epochs (the cosine schedule is re-shaped from "
                "the resumed epoch on)") if differ == ["epochs"] else ""
        raise ValueError(f"cannot resume: the checkpoint was made with other settings ({detail}){hint}")


def _resumable_options(method: Any) -> frozenset[str]:
    """The options of ``method`` declared ``resume=True`` (none for an unknown method)."""
    try:
        return resumable(get_method(method).Options)
    except ValueError:
        return frozenset()


def _flat_options(config: dict[str, Any]) -> dict[str, Any]:
    """A config with its method options beside the other fields (a difference names the option)."""
    options = config.get("options") or {}
    return {**{k: v for k, v in config.items() if k != "options"}, **options}


def _check_finite(value: float, epoch: int, step: int | None) -> None:
    if not math.isfinite(value):
        raise Diverged(epoch, step, value)


def cpu_has_native_bf16() -> bool:
    """Whether PyTorch's CPU kernels run bf16 natively here (AVX512-BF16 or AMX)."""
    return torch.backends.cpu.get_cpu_capability() in ("AVX512_BF16", "AMX") or _cpu_flag("avx512_bf16")


def _cpu_flag(flag: str) -> bool:
    try:
        return flag in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)
