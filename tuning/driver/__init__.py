"""The search's driver process: start or join Ray, build or restore the Tuner (searcher,
ASHA scheduler, callbacks), run it, close the records and write the report; the same for
grids of fixed configurations (confirm, reproduce). A new searcher or scheduler goes here.
"""
