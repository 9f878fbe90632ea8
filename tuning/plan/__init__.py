"""What a search or grid is before anything runs: the names a search may set, search-space
files, presets and defaults, the resolved and checked plan (``search.json``), the
paper's table rows, cost estimates. A new setting or check that needs no Ray goes here.
"""
