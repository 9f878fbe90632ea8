"""Report of a search: best configuration, table of all trials (parquet + markdown),
importance at a common budget (fANOVA, PED-ANOVA) and plots, written to ``<experiment>/report/``
(a folder or object storage) and logged as artifacts of the search's parent MLflow run.

    python tuning/report.py hpo_results/spmi-fmnist-20250101-120000 [--no-mlflow]
    python tuning/report.py s3://bucket/hpo/spmi-fmnist-20250101-120000 --storage-endpoint http://minio:9000
"""

from __future__ import annotations

import argparse
import sys

from spmi.cli_options import DefaultsFormatter, invoked_as
from tuning.cli.environment import apply_environment
from tuning.record import secrets
from tuning.results.report import make_report


def main(argv: list[str] | None = None) -> int:
    apply_environment()
    parser = argparse.ArgumentParser(prog=invoked_as("tuning.report", "python tuning/report.py"),
                                     description=__doc__.split("\n\n")[0], formatter_class=DefaultsFormatter)
    parser.add_argument("experiment", help="the search's folder (<storage-path>/<name>), a path or a URI")
    parser.add_argument("--storage-endpoint", metavar="URL", help="S3-compatible endpoint of an s3:// location")
    parser.add_argument("--no-mlflow", action="store_true", help="only write the files")
    args = parser.parse_args(argv)
    try:
        report = make_report(args.experiment, log_mlflow=not args.no_mlflow, endpoint=args.storage_endpoint)
    except ValueError as err:
        print(f"error: {secrets.mask(str(err))}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0

