"""The commands: ``search``, ``confirm``, ``reproduce``, ``report``, ``evaluate``.

Each module turns its arguments into the typed inputs of the wings below and back into
lines and an exit status (2: bad input, one line on stderr, before Ray starts). A new
flag starts here; what it changes lives in the wing that owns it.
"""
