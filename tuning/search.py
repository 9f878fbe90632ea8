#!/usr/bin/env python
"""``python tuning/search.py ...``: a hyperparameter search; the ``spmi-search`` command
(``tuning.cli.search``) of the installed package, run as a script."""

import sys

if __name__ == "__main__":
    try:
        from tuning.cli.search import main
    except ModuleNotFoundError as err:
        if err.name != "tuning":
            raise
        print("error: the tuning package is not importable: install the project (pip install -e .), or run "
              "from the repository folder with PYTHONPATH=.", file=sys.stderr)
        sys.exit(2)
    sys.exit(main())
