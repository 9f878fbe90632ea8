"""The two places where a trial leans on Ray internals, because Ray 2.60 offers no public
form of what they do; each is pinned by ``tests/test_layout.py`` so that a Ray upgrade
that moves the internal fails a test instead of a search."""

from __future__ import annotations

import logging

from ray.train.torch import TorchTrainer

CLEANER = "PlacementGroupCleanerCallback"  # Ray Train V2's default callback (ray/train/v2/_internal)


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
