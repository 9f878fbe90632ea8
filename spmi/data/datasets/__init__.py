"""One module per dataset, each registering its spec (``spmi.data.registry.DatasetInfo``):
facts, files and checksums, how to obtain them, and the paper's settings. Adding a dataset
is adding a file here (and a test-data writer in tests/datagen.py only for a new on-disk
format)."""
