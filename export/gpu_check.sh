#!/usr/bin/env bash
# GPU check for a lent H100/H200 (PyTorch + CUDA there, no internet): LDN-121 + fused JSD head
# at 1024x2048 on the torch CUDA path. Prints one table; finishes in a few minutes.
# Usage (repository root): bash export/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/models:$PWD/export${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
python -m nflowjs_export.gpu_check "$@"
