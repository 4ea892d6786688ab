#!/usr/bin/env bash
# The open-a2f GPU benchmark kit (built by `make gpu-kit`): on a GPU host with Python 3.12,
# PyTorch + CUDA and no network, check the host, install the kit offline, then ramp real-time
# streams against embedded Triton (network on the GPU) and N gateway workers.
#   bash run.sh [--workers N] [--levels 64 128 ...] [--seconds S] [--budget S]
# Report: results/bench-gpu.md beside this script. Fits one 6-minute run with the defaults.
set -euo pipefail
KIT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-python3}"
command -v "$PYTHON" >/dev/null || { echo "error: $PYTHON not found (Python 3.12 expected)" >&2; exit 1; }
exec "$PYTHON" "$KIT/project/gpu_kit/run.py" "$@"
