#!/usr/bin/env bash
# Create .venv and install genrm-platform with the server, router and dev extras, CPU-only.
# torch is pinned to the CPU build first: an unpinned `torch` would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
# The code sandbox runs programs in bubblewrap on the distribution's python3 (and g++ for C++). As root on
# Debian/Ubuntu (CI, a fresh machine) they are installed here; elsewhere the sandbox tests skip and say why.
missing=()
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
[ -x /usr/bin/python3 ] || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "note: ${missing[*]} not installed: the code sandbox needs them (apt-get install ${missing[*]})" >&2
  fi
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet -e ".[dev]"
# verl's reward managers for its integration tests (see the file for why --no-deps).
.venv/bin/python -m pip install --quiet --no-deps -r scripts/verl-test-requirements.txt
echo "installed into .venv ($(.venv/bin/python -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'))"
