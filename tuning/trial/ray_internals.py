"""The three places where the search leans on Ray internals, because Ray 2.60 offers no public
form of what they do; each is pinned by ``tests/test_layout.py`` so that a Ray upgrade
that moves the internal fails a test instead of a search."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from ray.train.torch import TorchTrainer

CLEANER = "PlacementGroupCleanerCallback"  # Ray Train V2's default callback (ray/train/v2/_internal)
# the credentials Ray Tune copies from the driver's environment into every trial actor's runtime environment
TUNE_PROPAGATED_SECRETS = frozenset({"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECURITY_TOKEN",
                                     "AWS_SESSION_TOKEN"})


@contextlib.contextmanager
def tune_keeps_credentials() -> Iterator[None]:
    """Meanwhile Ray Tune does not copy the driver's AWS credentials into its trial actors'
    runtime environment (which Ray logs on every node and shows through its dashboard and
    Jobs API): Tune adds each variable of ``ENV_VARS_TO_PROPAGATE`` (ray/tune/execution/
    class_cache.py) that the driver has, and has no switch for it; so the set is narrowed."""
    from ray.tune.execution import class_cache
    saved = class_cache.ENV_VARS_TO_PROPAGATE
    class_cache.ENV_VARS_TO_PROPAGATE = set(saved) - TUNE_PROPAGATED_SECRETS
    try:
        yield
    finally:
        class_cache.ENV_VARS_TO_PROPAGATE = saved


class TorchTrainerWithoutCleaner(TorchTrainer):
    """TorchTrainer without Ray Train's placement-group cleaner actor: without the State API
    (``ray[default]``) it can never see its controller die, and then polls (and warns)
    forever. Ray has no switch for it: the cleaner is one of the callbacks that
    ``DataParallelTrainer._create_default_callbacks`` always adds, so this override drops
    it by its class name."""

    def _create_default_callbacks(self) -> list:
        return [cb for cb in super()._create_default_callbacks() if type(cb).__name__ != CLEANER]


def quiet_train_reports() -> None:
    """No INFO line per ``ray.train.report``: Ray Train logs it on a logger named after its
    module's file (``logging.getLogger(__file__)`` in ray/train/v2/_internal/execution/
    context.py), which neither ``ray.train.LoggingConfig`` nor the ``ray.train`` logger
    reaches; so the logger is looked up by that file's name."""
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    try:
        from ray.train.v2._internal.execution import context
        logging.getLogger(context.__file__).setLevel(logging.WARNING)
    except ImportError:
        pass
