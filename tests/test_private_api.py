"""No private Ray or Optuna API in tuning/ except the two isolated functions of
``tuning.trial.ray_internals``, each pinned here to what it relies on: a Ray upgrade that
moves those internals fails these tests, not a search."""

from __future__ import annotations

import inspect
import logging
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ISOLATED = REPO / "tuning" / "trial" / "ray_internals.py"
# leading-underscore names of Ray/Optuna objects this code once used, and their private modules
PRIVATE = re.compile(r"\._storage\b|\._trial_id\b|_ot_trials|_ot_study|_completed_trials|\._contains\(|"
                     r"ray\.train\._internal|_create_default_callbacks|ray\.train\.v2\._internal|"
                     r"ray\.tune\.[a-z_.]*\._|optuna\.[a-z_.]*\._[a-z]")


def test_no_private_ray_or_optuna_names_outside_the_isolated_module():
    found = [f"{path.relative_to(REPO)}:{i}: {line.strip()}"
             for path in (REPO / "tuning").rglob("*.py") if path != ISOLATED
             for i, line in enumerate(path.read_text().splitlines(), 1) if PRIVATE.search(line)]
    assert found == [], "\n".join(found)


def test_the_cleaner_less_trainer_drops_exactly_rays_placement_group_cleaner():
    from ray.train import ScalingConfig
    from ray.train.torch import TorchTrainer

    from tuning.trial.ray_internals import CLEANER, TorchTrainerWithoutCleaner

    def names(cls) -> list[str]:
        trainer = cls(lambda: None, scaling_config=ScalingConfig(num_workers=1))
        return [type(cb).__name__ for cb in trainer._create_default_callbacks()]
    theirs, ours = names(TorchTrainer), names(TorchTrainerWithoutCleaner)
    assert CLEANER in theirs and ours == [n for n in theirs if n != CLEANER]


def test_train_reports_are_logged_where_the_quieting_looks():
    from ray.train.v2._internal.execution import context

    from tuning.trial.ray_internals import quiet_train_reports
    assert "logging.getLogger(__file__)" in inspect.getsource(context)
    logging.getLogger(context.__file__).setLevel(logging.INFO)
    quiet_train_reports()
    assert logging.getLogger(context.__file__).level == logging.WARNING


def test_trial_actors_get_no_aws_credentials_from_tune_while_the_search_keeps_them(monkeypatch):
    """Ray Tune copies the driver's AWS credentials into each trial actor's runtime
    environment (ray/tune/execution/class_cache.py); ``tune_keeps_credentials`` stops that."""
    from ray.tune.execution.class_cache import _ActorClassCache

    from tuning.trial.ray_internals import tune_keeps_credentials
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "made-up-secret")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "made-up-id")

    class Trainable:
        pass

    def actor_env() -> dict:
        return _ActorClassCache().get(Trainable)._default_options["runtime_env"]["env_vars"]
    assert actor_env()["AWS_SECRET_ACCESS_KEY"] == "made-up-secret"  # Tune's own behaviour
    with tune_keeps_credentials():
        assert not {"AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID"} & set(actor_env())
    assert actor_env()["AWS_SECRET_ACCESS_KEY"] == "made-up-secret"
