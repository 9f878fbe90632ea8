"""The process environment every command sets before it starts Ray or MLflow: one
explicit call at the top of each ``main`` (importing a command changes nothing)."""

from __future__ import annotations

import logging
import os
import sys

# defaults only: a variable the user exported wins
DEFAULTS = {
    # snapshot the experiment state every second, so a killed driver loses at most about
    # one epoch per running trial (Tune reads it when the Tuner starts)
    "TUNE_GLOBAL_CHECKPOINT_S": "1",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    "RAY_CHDIR_TO_TRIAL_DIR": "0",  # trials keep the driver's working folder
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
    "MLFLOW_LOGGING_LEVEL": "WARNING",  # no "creating tables" lines (read when mlflow is imported)
    "RAY_AIR_NEW_OUTPUT": "0",  # the compact CLIReporter table of tuning.driver.runner
}


def apply_environment() -> None:
    """Set the Ray/Tune/MLflow defaults above where the environment leaves them unset. MLflow
    reads its logging level when imported: where it already is (a caller that imported it
    before running a command's ``main``), its logger takes the level now."""
    for name, value in DEFAULTS.items():
        os.environ.setdefault(name, value)
    if "mlflow" in sys.modules:
        logging.getLogger("mlflow").setLevel(os.environ["MLFLOW_LOGGING_LEVEL"].upper())
