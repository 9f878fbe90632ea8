"""Writes default_run.json: what the code at commit 0105f78 (before --val-labels and
--val-from-labelled) gives with today's flags, for tests/test_validation.py.

    git archive 0105f78 | tar -x -C /tmp/ref
    cd /tmp/ref && PYTHONPATH=/tmp/ref:/tmp/ref/tests python <this file> > default_run.json

Digests (SHA-256 over the tensors' bytes, in order) of seeded splits of synthetic labels
and of a tiny run's split, initial weights and first epoch's sampled batch positions; that
run's metrics.jsonl without timings, trained on one thread (the thread count changes float
sums: a 2-thread run's third-epoch loss differs in the 4th digit).
"""

import contextlib
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import torch

from datagen import write_idx_fmnist
from spmi.config import resolve
from spmi.data import load_dataset, make_split
from spmi.records import read_jsonl
from spmi.train import main
from spmi.trainer import Trainer

TIMING = ("time/label_channel", "time/train", "time/eval", "seconds")
FLAGS = ["--labelled", "20", "--val-size", "40", "--unlabelled-size", "96", "--batch-size", "16", "--epochs", "3",
         "--eval-batch-size", "64", "--warmup", "1", "--tau", "0.5", "--tau-u", "0.5", "--seed", "5", "--device", "cpu"]
SPLITS = {"default": {"labelled": 100, "partial_rate": 0.3, "val_size": 500, "seed": 1},
          "no_val": {"labelled": 200, "partial_rate": 0.1, "val_size": 0, "seed": 2},
          "exclusive": {"labelled": 100, "partial_rate": 0.5, "val_size": 300, "seed": 3,
                        "include_labelled_in_unlabelled": False},
          "hierarchical": {"labelled": 100, "partial_rate": 0.6, "val_size": 200, "seed": 4, "superclass": "5+5"}}


def digest(tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def split_labels() -> torch.Tensor:
    labels = torch.arange(3000) % 10
    return labels[torch.randperm(3000, generator=torch.Generator().manual_seed(0))]


def split_kwargs(case: str) -> dict:
    kw = dict(SPLITS[case])
    if kw.get("superclass") == "5+5":
        kw["superclass"] = torch.arange(10) // 5
    return kw


def cfg_values(root: Path) -> dict:
    it = iter(FLAGS)
    values = {flag[2:].replace("-", "_"): value for flag, value in zip(it, it, strict=True)}
    values = {k: v if k == "device" else float(v) if k in ("tau", "tau_u") else int(v) for k, v in values.items()}
    return {**values, "dataset": "fmnist", "data_root": str(root), "verify_data": False}


def split_tensors(split) -> list[torch.Tensor]:
    return [split.labelled_idx, split.candidates, split.unlabelled_idx, split.val_idx]


def first_epoch_samples(trainer) -> list[torch.Tensor]:
    """The batch positions the samplers draw for the first epoch (consumes them)."""
    n = trainer.steps_per_epoch * trainer.cfg.batch_size
    return [trainer.lab_sampler.take(n), trainer.unl_sampler.take(n)]


if __name__ == "__main__":
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp())
    write_idx_fmnist(tmp / "data", n_train=400, n_test=60)
    with contextlib.redirect_stdout(sys.stderr):
        assert main(["--dataset", "fmnist", "--data-root", str(tmp / "data"), "--no-verify-data", "--no-progress",
                     *FLAGS, "--out", str(tmp / "run")]) == 0
    records = [{k: v for k, v in r.items() if k not in TIMING} for r in read_jsonl(tmp / "run" / "metrics.jsonl")]
    trainer = Trainer(resolve(cfg_values(tmp / "data")), load_dataset("fmnist", tmp / "data", verify=False))
    out = {"splits": {case: digest(split_tensors(make_split(split_labels(), 10, **split_kwargs(case))))
                      for case in SPLITS},
           "run_split": digest(split_tensors(trainer.split)),
           "run_init": digest(trainer.model.state_dict().values()),
           "run_samples": digest(first_epoch_samples(trainer)),
           "records": records}
    print(json.dumps(out, indent=1))
