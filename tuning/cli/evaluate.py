#!/usr/bin/env python
"""Test accuracy of a published model (a registered or logged MLflow model of a search).

    python tuning/evaluate.py models:/spmi-fmnist@best
    python tuning/evaluate.py runs:/<run id>/model --tracking-uri sqlite:///$PWD/hpo_results/mlflow.db

The model takes uint8 images; its metadata names the dataset, whose test split is read
from ``--data-root`` (default: where the search read it). Nothing is unpickled: the model's
pt2 archive is checked to hold none, and a model logged as a pickle is refused.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

from spmi.cli_options import DefaultsFormatter, invoked_as
from tuning.cli.environment import apply_environment
from tuning.record import secrets


def evaluate(model_uri: str, tracking_uri: str, data_root: str | None = None, device: str = "cpu",
             batch_size: int | None = None, verify: bool | None = None) -> dict:
    """``{"accuracy", "correct", "total", "recorded", "metadata"}`` of ``model_uri`` on its
    test split; the model is read without unpickling (``tuning.publish.load_published``)."""
    import torch

    from spmi.data import load_dataset
    from spmi.evaluate import count_correct
    from tuning.results.publish import load_published
    model, meta = load_published(model_uri, tracking_uri, device)
    verify = meta.get("verify_data", True) if verify is None else verify
    data = load_dataset(meta["dataset"], data_root or meta["data_root"], verify=bool(verify))
    dev = torch.device(device)
    x, y = data.test_x.to(dev), data.test_y.to(dev)
    with torch.no_grad():
        correct = int(count_correct(model, x, y, lambda b: b, int(batch_size or meta.get("eval_batch_size", 1024)),
                                    contextlib.nullcontext))
    return {"accuracy": correct / len(y), "correct": correct, "total": len(y), "recorded": meta.get("test_acc"),
            "metadata": meta}


def main(argv: list[str] | None = None) -> int:
    from tuning.record.mlflow_log import default_uri
    apply_environment()
    p = argparse.ArgumentParser(prog=invoked_as("tuning.evaluate", "python tuning/evaluate.py"),
                                description=__doc__.split("\n\n")[0], formatter_class=DefaultsFormatter)
    p.add_argument("model", help="models:/<method>-<dataset>@best, models:/<name>/<version> or runs:/<run id>/model")
    p.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI") or default_uri("hpo_results"),
                   help="the MLflow store holding the model (default: $MLFLOW_TRACKING_URI, else hpo_results' SQLite)")
    p.add_argument("--data-root", help="folder of the dataset files (default: the search's)")
    p.add_argument("--no-verify-data", action="store_true", help="skip the MD5 check of the dataset files "
                   "(default: as the search did)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--batch-size", type=int, help="images per forward pass (default: the search's eval batch)")
    args = p.parse_args(argv)
    try:
        out = evaluate(args.model, args.tracking_uri, args.data_root, args.device, args.batch_size,
                       False if args.no_verify_data else None)
    except Exception as err:  # MLflow and data errors: one line
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(secrets.mask(f"error: {args.model}: {first}"), file=sys.stderr)
        return 2
    meta = out["metadata"]
    print(f"{args.model}: test accuracy {out['accuracy']:.4f} ({out['correct']}/{out['total']}) on {meta['dataset']}")
    if out["recorded"] is not None:
        print(f"recorded at trial {meta.get('trial_id', '?')}'s best epoch {meta.get('best_epoch')}: "
              f"test/acc {float(out['recorded']):.4f}, {meta.get('metric', 'val/acc')} "
              f"{float(meta.get('score', meta.get('val_acc'))):.4f}")
    return 0

