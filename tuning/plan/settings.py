"""Defaults of a search: presets, file locations (the paper's settings per dataset are in
``spmi.data.registry``)."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]  # holds spmi/ and tuning/: a checkout, or site-packages
SPACES_PACKAGE = "search_spaces"  # the shipped spaces, package data (imported by the driver only)
METRIC, MODE = "val/acc", "max"  # the default objective: clean-label validation accuracy (the oracle)
# what a search may select on (--metric; all maximised): clean val/acc, or the partial-label
# criteria of a validation set that carries candidate sets (spmi.metrics)
OBJECTIVES = ("val/acc", "val/covering_rate", "val/approx_acc")
# who proposes the trials (Optuna's TPESampler, RandomSampler, GridSampler) and who stops them
# (Ray's ASHAScheduler, HyperBandScheduler, FIFOScheduler: none stopped)
SEARCHERS = ("tpe", "random", "grid")
SCHEDULERS = ("asha", "hyperband", "fifo")
TIME_ATTR = "epoch"          # epochs completed (1-based), reported by every trial
PAPER_EPOCHS = 500
DEFAULT_NUM_SAMPLES = 32
DEFAULT_GRACE_MARGIN = 5     # epochs past the largest warm-up before ASHA may stop a trial
DEFAULT_REDUCTION_FACTOR = 3
# DDP trials (--workers-per-trial N > 1): the Tune trial only drives a Ray Train run
DRIVER_CPU = 0.1             # CPU share of that idle driver
DRIVER_HEADROOM_CPUS = 1     # logical CPUs a local Ray gets on top of the cores, for the drivers
TRAIN_RUNS_DIR = "train_runs"  # <experiment>/train_runs/train-<trial_id>/epoch_NNNN: DDP checkpoints

# presets: search settings (plan fields) and config values (``config``); the CLI overrides both.
# A space file may narrow its ranges for a preset (its ``presets:`` section, see tuning.plan.spaces)
PRESETS: dict[str, dict[str, object]] = {
    "quick": {
        "num_samples": 8, "max_epochs": 8, "grace_margin": 2, "reduction_factor": 2,
        "cpus_per_trial": 1, "max_concurrent": 2,
        "config": {"labelled": 1000, "unlabelled_size": 5000, "val_size": 2000},
    },
}

# the quick preset's cost, measured on Fashion-MNIST (docs/tuning.md, --preset quick: how): CPU time of
# the driver, Ray and the trials, 938 s before the test set was measured only where a trial may end;
# `time make demo` on 2 idle cores (AVX512 machine, 2026-12-08): 5 min 3 s before that change, 4 min 44 s after
QUICK_DEMO_TIME = "under 5 minutes on 2 idle cores"


def spaces_dir() -> Path:
    """The folder of the shipped search spaces, wherever the package lies (a source checkout
    or an installed wheel), found through importlib.resources."""
    return Path(str(importlib.resources.files(SPACES_PACKAGE)))


def default_space(method: str) -> Path:
    """``search_spaces/<method>.yaml``: the method's space, with its per-dataset and preset overrides."""
    return spaces_dir() / f"{method}.yaml"
