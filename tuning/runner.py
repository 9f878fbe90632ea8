"""Layout 1's import path of the trials' folder-name function, kept for reading old searches.

A search started before tuning/ was cut into wings pickled ``tuning.runner.trial_dirname``
(Tune's ``trial_dirname_creator``) into every trial of its experiment state, so reading it
(its report, a confirmation of it) imports this name. Nothing else of that layout is kept:
such a search is not resumed (``tuning.plan.search_plan.check_layout``).
"""

from tuning.trial.trainable import trial_dirname

__all__ = ["trial_dirname"]
