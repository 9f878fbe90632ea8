"""Where a finished search's wall time went, from its experiment folder alone.

    python benchmarks/search_breakdown.py hpo_results/<name> [--end UNIX_TIME] [--json]

Reads ``search.json`` (when the search was created) and every trial's ``result.json``
(Tune's per-epoch results, which carry the trainer's ``time/*`` and ``seconds`` fields).
Per trial, Tune's ``time_this_iter_s`` of an epoch is the trainer's own epoch time
(``seconds`` = label-channel pass + training + evaluation) plus what Ray and MLflow add
around it (checkpoint, MLflow logging, ``tune.report``); the first epoch also carries the
trial's start-up (data from the object store, trainer construction, MLflow run). A trial's
test of its best weights (``time/best_test``, at ASHA's rungs and its last epoch) is
counted with the trainer's phases, not as overhead. The
search-level rows split the wall time (created -> ``--end``, default the last result)
into the time before the first trial reported its start, the trials' slot time, and what
is left after the last result (the report, when ``--end`` is given).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

PHASES = ("time/label_channel", "time/train", "time/eval", "time/best_test")


def read_trials(folder: Path) -> dict[str, list[dict[str, Any]]]:
    trials = {}
    for path in sorted(folder.glob("*/result.json")):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if rows:
            trials[path.parent.name] = rows
    return trials


def breakdown(folder: Path, end: float | None = None) -> dict[str, Any]:
    plan = json.loads((folder / "search.json").read_text())
    created = time.mktime(time.strptime(plan["created"], "%Y-%m-%d %H:%M:%S"))
    trials = read_trials(folder)
    if not trials:
        raise SystemExit(f"error: {folder} holds no trial results")
    sums = dict.fromkeys(PHASES, 0.0)
    epochs = startup = per_epoch_overhead = trial_time = 0.0
    starts, last = [], 0.0
    for rows in trials.values():
        first = rows[0]
        starts.append(first["timestamp"] - first["time_this_iter_s"])
        last = max(last, rows[-1]["timestamp"])
        trial_time += sum(r["time_this_iter_s"] for r in rows)
        for i, r in enumerate(rows):
            epochs += 1
            for p in PHASES:
                sums[p] += r.get(p, 0.0)
            extra = r["time_this_iter_s"] - r.get("seconds", 0.0) - r.get("time/best_test", 0.0)
            if i == 0:
                startup += extra
            else:
                per_epoch_overhead += extra
    end = end if end is not None else last
    wall = end - created
    trainer = sum(sums.values())
    return {
        "search": plan["name"], "trials": len(trials), "epochs": int(epochs), "wall_seconds": wall,
        "before_first_trial_seconds": min(starts) - created, "after_last_result_seconds": end - last,
        "trial_seconds": trial_time, "trainer_seconds": trainer,
        **{p.replace("time/", "") + "_seconds": v for p, v in sums.items()},
        "trial_startup_seconds": startup, "per_epoch_overhead_seconds": per_epoch_overhead,
        "ray_mlflow_share_of_trial_time": (startup + per_epoch_overhead) / trial_time,
        "per_epoch_overhead_share": per_epoch_overhead / trial_time,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", type=Path, help="the search's folder (<storage-path>/<name>)")
    parser.add_argument("--end", type=float, help="UNIX time the search command ended (default: the last result)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    b = breakdown(args.experiment, args.end)
    if args.json:
        print(json.dumps(b))
        return
    wall = b["wall_seconds"]
    print(f"{b['search']}: {b['trials']} trials, {b['epochs']} epochs, wall {wall:.0f} s")
    for key in ("before_first_trial_seconds", "after_last_result_seconds", "trial_seconds", "trainer_seconds",
                "train_seconds", "label_channel_seconds", "eval_seconds", "best_test_seconds", "trial_startup_seconds",
                "per_epoch_overhead_seconds"):
        print(f"  {key:<28} {b[key]:9.1f}")
    print(f"  Ray + MLflow share of trial time: {b['ray_mlflow_share_of_trial_time']:.1%} "
          f"(start-up {b['trial_startup_seconds'] / b['trial_seconds']:.1%}, "
          f"per epoch {b['per_epoch_overhead_share']:.1%})")


if __name__ == "__main__":
    main()
