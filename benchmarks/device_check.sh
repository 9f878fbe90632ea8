#!/usr/bin/env bash
# The prepared device check: one table of epoch seconds (Fashion-MNIST/LeNet, CIFAR-10/WRN-28-2
# on generated data of the real formats; fp32 and bf16), the matrix-product peak, the
# label-channel pass share, and a 4-trial quick search with 0.25 GPU per trial next to 1 trial
# per GPU. Unattended, under 8 minutes on one GPU.
#
#   bash benchmarks/device_check.sh [--json-out FILE]          # on a machine with a CUDA GPU
#   bash benchmarks/device_check.sh --cpu                       # smoke mode: tiny sizes on the CPU
#
# PYTHON selects the interpreter (default: python3 on PATH).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export RAY_USAGE_STATS_ENABLED=0
exec "$PYTHON" benchmarks/device_check.py "$@"
