#!/usr/bin/env bash
# Creates .venv and installs geocompress with its test extras on a fresh machine.
# The torch pin below is for *this project's machines* (CPU, Python 3.11, wheels on local disk):
# torch==2.14.1 + torchvision==0.29.1 is the pair that imports together with CompressAI here.
# Elsewhere set GEOCOMPRESS_TORCH to the torch spec for your hardware (or "skip" to keep yours).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
TORCH_SPEC=${GEOCOMPRESS_TORCH:-"torch==2.14.1 torchvision==0.29.1"}
if [ "$TORCH_SPEC" != "skip" ]; then
  # shellcheck disable=SC2086
  .venv/bin/python -m pip install -q $TORCH_SPEC 2>&1 | grep -v "is ignored" || true
fi
.venv/bin/python -m pip install -q -e ".[test,onnx]" 2>&1 | grep -v "is ignored" || true
.venv/bin/python -c "import geocompress, compressai, torch, torchvision; print('geocompress', geocompress.__version__, '| torch', torch.__version__, '| compressai', compressai.__version__)"
