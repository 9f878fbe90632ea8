"""Driver-side Tune callback: the search states its remaining wall time and keeps its
``--time-budget``.

From the second result of any trial on it measures seconds per epoch (the median gap
between a trial's consecutive results: training, evaluation, logging, checkpoint), and at
most once a minute prints the remaining wall time estimated by ``tuning.plan.cost`` and logs it
to the search's parent MLflow run (metric ``search/remaining_s``, tag
``search.remaining``). When the budget of this driver session is spent it sends itself
SIGUSR1, Tune's graceful stop: the experiment state is saved and the search is resumable.
"""

from __future__ import annotations

import logging
import os
import signal
import statistics
import time
from typing import Any

from ray.tune import Callback

from tuning.plan import cost
from tuning.plan.settings import TIME_ATTR
from tuning.record import mlflow_log

log = logging.getLogger(__name__)
REPORT_EVERY_S = 60.0


class _Session:
    """This driver process's --time-budget (a callback restored with the experiment reads it)."""

    deadline: float | None = None
    budget_s: float | None = None
    reached = False


def set_budget(seconds: float | None) -> None:
    """Start the clock of this driver session's budget (None: no budget)."""
    _Session.budget_s = seconds
    _Session.deadline = None if seconds is None else time.monotonic() + seconds
    _Session.reached = False


def budget_reached() -> bool:
    return _Session.reached


class CostWatch(Callback):
    """Holds only plain values (it pickles with the experiment); timing state is reset
    in ``setup``, which runs again when a search is resumed."""

    def __init__(self, uri: str, parent_run_id: str, num_samples: int, concurrency: int, asha: cost.Asha):
        self.uri, self.parent_run_id = uri, parent_run_id
        self.num_samples, self.concurrency, self.asha = num_samples, concurrency, asha
        self._reset()

    def _reset(self) -> None:
        self.start = time.monotonic()
        self.last_seen: dict[str, tuple[int, float]] = {}
        self.gaps: list[float] = []
        self.next_report = 0.0
        self.stopping = False

    def setup(self, **info: Any) -> None:
        self._reset()

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        now, done = time.monotonic(), int(result.get(TIME_ATTR, 0))
        seen = self.last_seen.get(trial.trial_id)
        if seen is not None and done > seen[0]:
            self.gaps.append((now - seen[1]) / (done - seen[0]))
            self.gaps = self.gaps[-50:]
        self.last_seen[trial.trial_id] = (done, now)
        if self.gaps and now >= self.next_report:
            self.next_report = now + REPORT_EVERY_S
            self.report(trials, trial, done)

    def report(self, trials: list, current: Any, current_done: int) -> float:
        running, not_started = [], self.num_samples - len(trials)
        for t in trials:
            if t.status in ("TERMINATED", "ERROR"):
                continue
            epochs = current_done if t is current else int((t.last_result or {}).get(TIME_ATTR, 0))
            if t.status == "PENDING" and epochs == 0:
                not_started += 1
            else:
                running.append(epochs)
        epoch_s = statistics.median(self.gaps)
        left = cost.remaining_seconds(self.asha, epoch_s, running, not_started, self.concurrency)
        print(f"[search] estimated time left: {cost.format_duration(left)} ({len(running)} running, "
              f"{not_started} to start, {epoch_s:.1f} s/epoch, ASHA rungs {self.asha.rungs()})", flush=True)
        try:
            mlflow_log.log_metrics(self.uri, self.parent_run_id, {"search/remaining_s": left},
                                   step=int(time.monotonic() - self.start))
            mlflow_log.set_tags(self.uri, self.parent_run_id, {"search.remaining": cost.format_duration(left)})
        except Exception as err:  # logging must never stop the search
            log.warning("could not log the time estimate: %s", err)
        return left

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if _Session.deadline is not None and not self.stopping and time.monotonic() >= _Session.deadline:
            self.stopping = _Session.reached = True
            print(f"[search] time budget of {cost.format_duration(_Session.budget_s or 0)} reached: stopping "
                  f"(resumable with --resume)", flush=True)
            os.kill(os.getpid(), signal.SIGUSR1)
