"""Make a dataset available and verified: ``python -m spmi.data.fetch fmnist [--data-root DIR]``.

Fashion-MNIST comes from Debian's ``dataset-fashion-mnist`` (installed with apt-get when
running as root), else torchvision downloads it; the others are downloaded by torchvision.
"""

from __future__ import annotations

import argparse
import sys

from spmi.cli_options import DefaultsFormatter, invoked_as
from spmi.config import TrainConfig
from spmi.data.registry import DATASETS, DataError
from spmi.data.sources import default_root, load_dataset, spec_checksum


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=invoked_as("spmi.data.fetch", "python -m spmi.data.fetch"),
                                     description=__doc__.splitlines()[0], formatter_class=DefaultsFormatter)
    parser.add_argument("dataset", choices=sorted(DATASETS))
    parser.add_argument("--data-root", help=TrainConfig.__dataclass_fields__["data_root"].metadata["help"])
    args = parser.parse_args(argv)
    try:
        data = load_dataset(args.dataset, args.data_root, download=True, install=True)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    root = args.data_root or default_root(args.dataset)
    print(f"{args.dataset}: {len(data.train_y)} training and {len(data.test_y)} test images verified "
          f"in {root} (files checksum {spec_checksum(args.dataset)}: a search's data_checksum)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
