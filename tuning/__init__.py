"""Hyperparameter search (Ray Tune + Optuna + MLflow) over the ``spmi`` library."""
