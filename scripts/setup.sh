#!/usr/bin/env bash
# Create .venv and install genrm-platform with the server, router and dev extras, CPU-only.
# torch is pinned to the CPU build first: an unpinned `torch` would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet -e ".[dev]"
# verl's reward managers for its integration tests (see the file for why --no-deps).
.venv/bin/python -m pip install --quiet --no-deps -r scripts/verl-test-requirements.txt
echo "installed into .venv ($(.venv/bin/python -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'))"
