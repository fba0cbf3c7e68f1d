#!/usr/bin/env bash
# Create (or update) the virtual environment $VENV (default .venv) and install sem_fast into it.
# Usage: scripts/setup_venv.sh [runtime|test]
#   runtime: torch 2.13.0 (CPU wheel on CPU machines), triton 3.7.1, numpy, sem_fast (with its
#            compiled backend when a C++ compiler is present; optional)
#   test:    runtime + pytest, pytest-benchmark, hypothesis, DALI, torchvision, timm; the compiled
#            backend must build
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${1:-runtime}"
VENV="${VENV:-.venv}"
PY="${PYTHON:-python3}"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip_install() { "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -c requirements/constraints.txt "$@"; }
pip_install -r requirements/runtime.txt
if [ "$profile" = "test" ]; then
  pip_install -r requirements/test.txt
  # Their declared dependencies would pull another torch: install them without.
  pip_install --no-deps torchvision==0.28.0 timm
fi
# Builds the compiled backend (csrc/) when a C++ compiler exists; the test profile requires it.
if [ "$profile" = "test" ]; then
  SEM_FAST_REQUIRE_EXT=1 pip_install --no-deps --no-build-isolation -e .
else
  pip_install --no-deps --no-build-isolation -e .
fi
