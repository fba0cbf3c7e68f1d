#!/usr/bin/env bash
# Create (or update) the virtual environment $VENV (default .venv) and install sem_fast into it.
# Usage: scripts/setup_venv.sh [demo|test]
#   demo: what the README's commands use: sem_fast (with its compiled backend when a C++ compiler
#         is found) and the extras plots, yaml, images, bench, torchvision and timm
#   test: sem_fast[test]: every extra, hypothesis and triton (the CPU interpreter of the tests);
#         the compiled backend must build
# The extras are named once, in sem_fast/extras.py. requirements/constraints.txt pins torch,
# triton, torchvision and timm on every step, so no dependency can replace the pinned torch.
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${1:-demo}"
case "$profile" in
  demo) extras="plots,yaml,images,bench,torchvision,timm" require_ext=0 ;;
  test) extras="test" require_ext=1 ;;
  *) echo "usage: $0 [demo|test]" >&2; exit 2 ;;
esac
VENV="${VENV:-.venv}"
PY="${PYTHON:-python3}"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip_install() { "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -c requirements/constraints.txt "$@"; }
# torch first: the compiled backend is built against the installed torch (--no-build-isolation).
pip_install torch numpy
# torchvision and timm without the dependencies they declare (a torch of their own); the extras
# below then add what else they need, under the same pins.
pip_install --no-deps torchvision timm
SEM_FAST_REQUIRE_EXT=$require_ext pip_install --no-build-isolation -e ".[$extras]"
