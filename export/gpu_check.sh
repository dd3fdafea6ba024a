#!/usr/bin/env bash
# GPU check for a lent GPU machine: LDN-121 + fused JSD head at 1024x2048, torch fp32 / fp16 /
# CUDA graphs and ONNX Runtime's CUDA provider, one table (p50/p99 ms, head overhead against the
# paper's 46.5 + 7.8 ms). Needs only the machine's python3 with a CUDA build of torch: whatever
# else is missing (torchvision for DenseNet-121, onnx + onnxscript for the export,
# onnxruntime-gpu) goes into a temporary venv that sees the system's torch
# (--system-site-packages) and is deleted afterwards. Without network, point WHEELHOUSE at a
# folder of wheels; if ONNX Runtime still cannot be installed its row is skipped and says why.
# Usage (repository root): bash export/gpu_check.sh [--iterations 200 ...]
# CPU smoke run: GPU_CHECK_NO_INSTALL=1 bash export/gpu_check.sh --device cpu --preset ldn-lite
#   --size 64x128 --warmup 1 --iterations 2
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
export PYTHONPATH="$PWD/models:$PWD/export:$PWD/ros2_ws/src/nflowjs_perception${PYTHONPATH:+:$PYTHONPATH}"
if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
fi

# What this interpreter lacks, as pip requirements (torchvision: the release made for this torch).
missing=$("$PYTHON" - <<'EOF'
import importlib.util

import torch

need = []
if importlib.util.find_spec("torchvision") is None:
    major, minor = (int(v) for v in torch.__version__.split("+")[0].split(".")[:2])
    need.append(f"torchvision==0.{minor + 15}.*" if major == 2 else "torchvision")
for module, requirement in [("numpy", "numpy"), ("onnx", "onnx"), ("onnxscript", "onnxscript")]:
    if importlib.util.find_spec(module) is None:
        need.append(requirement)
try:
    import onnxruntime
    cuda = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
except ImportError:
    cuda = False
if not cuda:
    need.append("onnxruntime-gpu")
print(" ".join(need))
EOF
)
if [ -n "$missing" ] && [ -n "${GPU_CHECK_NO_INSTALL:-}" ]; then
    echo "missing: $missing (GPU_CHECK_NO_INSTALL is set: not installing)"
elif [ -n "$missing" ]; then
    workdir=$(mktemp -d)
    trap 'rm -rf "$workdir"' EXIT
    echo "installing into a temporary venv: $missing"
    "$PYTHON" -m venv --system-site-packages "$workdir/venv"
    # shellcheck disable=SC2086  # $missing is a list of requirements
    if ! "$workdir/venv/bin/python" -m pip install --quiet ${WHEELHOUSE:+--find-links "$WHEELHOUSE"} $missing; then
        echo "could not install all of: $missing (no network? set WHEELHOUSE=folder of wheels);" \
            "going on with what is there"
        for requirement in $missing; do
            "$workdir/venv/bin/python" -m pip install --quiet \
                ${WHEELHOUSE:+--find-links "$WHEELHOUSE"} "$requirement" || true
        done
    fi
    PYTHON="$workdir/venv/bin/python"
fi
"$PYTHON" -m nflowjs_export.gpu_check "$@"
