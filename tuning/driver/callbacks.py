"""Driver-side Tune callbacks: ``CloseTrialRuns`` closes each trial's MLflow run when Tune
is done with the trial (a trial stopped by ASHA, or at max_t, is simply never resumed,
so the trainable itself cannot do it) and puts the best result so far on the search's
parent run; ``ReleaseTrainGroups`` frees the workers of a
DDP trial that Tune stopped."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ray.tune import Callback

from tuning.plan.settings import METRIC, TIME_ATTR
from tuning.record import mlflow_log
from tuning.trial.diverged import diverged_record

log = logging.getLogger(__name__)


class CloseTrialRuns(Callback):
    """On trial completion: FINISHED plus tags (final checkpoint, epochs, stopped early);
    on error: FAILED. Holds only plain values, so it pickles with the experiment."""

    def __init__(self, uri: str, experiment_id: str, max_epochs: int, parent_run_id: str = "", scheme: str = "",
                 metric: str = METRIC):
        self.uri, self.experiment_id, self.max_epochs, self.metric = uri, experiment_id, max_epochs, metric
        self.parent_run_id = parent_run_id
        self.scheme = scheme  # of the search's storage: checkpoint paths are tagged as URIs

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        result = trial.last_result or {}
        epochs = int(result.get(TIME_ATTR, 0))
        how = "stopped early (ASHA)" if epochs < self.max_epochs else "finished"
        print(f"[search] trial {trial.trial_id} {how} after {epochs} epochs: {self.metric} "
              f"{result.get(self.metric, float('nan')):.4f}", flush=True)
        tags = {mlflow_log.STATUS_TAG: "TERMINATED", "epochs_trained": epochs,
                "stopped_early": str(epochs < self.max_epochs).lower()}
        final = trial.checkpoint.path if trial.checkpoint is not None else result.get("checkpoint_path")  # DDP: Train's
        if final:
            scheme = getattr(self, "scheme", "")  # (absent in callbacks pickled by an older search)
            tags["final_checkpoint"] = f"{scheme}://{final}" if scheme and "://" not in final else final
        self._close(trial, "FINISHED", tags)
        if getattr(self, "parent_run_id", ""):
            done = sum(t.status in ("TERMINATED", "ERROR") for t in trials) + 1  # this one is not yet TERMINATED
            try:
                mlflow_log.update_parent_best(self.uri, self.parent_run_id, trial.trial_id, result, step=done)
            except Exception as err:
                log.warning("could not update the search's best result in MLflow: %s", err)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        tags: dict[str, Any] = {mlflow_log.STATUS_TAG: "ERROR"}
        folder = trial_folder(trial)
        diverged = diverged_record(folder) if folder is not None else None
        if diverged is not None:
            tags[mlflow_log.DIVERGED_TAG] = "true"
            print(f"[search] trial {trial.trial_id} diverged in epoch {diverged['epoch']} (non-finite loss): "
                  f"failed, not a result", flush=True)
        self._close(trial, "FAILED", tags)

    def _close(self, trial: Any, status: str, tags: dict[str, Any]) -> None:
        try:
            folder = trial_folder(trial)
            if folder is not None and (folder / mlflow_log.SPOOL_FILE).is_file():
                mlflow_log.replay_spool(self.uri, folder / mlflow_log.SPOOL_FILE)  # epochs kept during an outage
            run = mlflow_log.find_trial_run(self.uri, self.experiment_id, trial.trial_id)
            if run is None:
                return
            if not mlflow_log.is_complete(run):  # else an earlier driver's tags stay (see trainable)
                mlflow_log.set_tags(self.uri, run.info.run_id, tags)
            mlflow_log.terminate(self.uri, run.info.run_id, status)
        except Exception as err:  # logging must never stop the search
            log.warning("could not close the MLflow run of trial %s: %s", trial.trial_id, err)


def trial_folder(trial: Any) -> Path | None:
    """The trial's folder under the storage path, where the trainable writes its spool and
    divergence marker (``tuning.trial.trainable.trial_folder``); None when unknown."""
    for name in ("path", "local_path"):
        value = getattr(trial, name, None)
        if value and Path(value).is_dir():
            return Path(value)
    return None


class ReleaseTrainGroups(Callback):
    """DDP trials: when Tune is done with a trial (or retries it), remove its Ray Train
    worker placement group, which a killed trial actor leaves reserved (see tuning.trial.ddp)."""

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._release(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._release(trial)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._release(trial)

    def _release(self, trial: Any) -> None:
        from tuning.trial.ddp import PG_KEY, release_placement_group
        try:
            release_placement_group((trial.last_result or {}).get(PG_KEY))
        except Exception as err:  # never stop the search over it
            log.warning("could not release the workers of trial %s: %s", trial.trial_id, err)
