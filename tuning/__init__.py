"""Hyperparameter search (Ray Tune + Optuna + MLflow) over the ``spmi`` library.

The package is cut into wings by role; imports run one way, from a wing to the wings
listed after it (``tests/test_layout.py`` checks it), and ``spmi`` imports nothing of it:

- ``cli``: the commands (search, confirm, reproduce, report, evaluate): arguments in,
  exit status out; each ``main`` applies the process environment first.
- ``driver``: what runs in the search's driver process: Ray start, the Tuner, the
  searcher and scheduler, Tune callbacks, the driver lock, fixed-configuration grids.
- ``results``: reading back what trials wrote: the trials table, the report, importance,
  plots, statistics over seeds, the published best model.
- ``trial``: what runs inside a trial: the trial spec (all a trial receives from the
  driver), the trainable, its single-process and DDP strategies, the best epoch, the
  dataset on the trial's node.
- ``plan``: what a search or grid is before anything runs: search spaces, the resolved
  settings and every check that needs no Ray, presets and defaults, cost estimates.
- ``record``: where things are kept: storage (local or object store), MLflow, the
  Optuna study's database.
"""

WINGS = ("cli", "driver", "results", "trial", "plan", "record")  # the import order, top to bottom
