"""Where a search keeps things: its storage (a folder or an object store), the MLflow
runs (search, trials), the Optuna study's database. Nothing here imports Ray.
"""
