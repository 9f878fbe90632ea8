"""The search spaces shipped with spmi-tune: ``<method>.yaml``, one per registered method,
with per-dataset and preset overrides (format: docs/tuning.md). Package data, found through
``importlib.resources`` (``tuning.settings.default_space``), so a source checkout and an
installed wheel read the same files; ``--space FILE`` takes any other file."""
