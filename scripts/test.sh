#!/usr/bin/env bash
# Run the whole test suite in its own virtual environment (VENV, default .venv-test): installs
# torch 2.13.0 + triton 3.7.1 + the test tools, then runs pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
export VENV="${VENV:-.venv-test}"
scripts/setup_venv.sh test
exec "$VENV/bin/python" -m pytest tests "$@"
