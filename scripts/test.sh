#!/usr/bin/env bash
# Run the whole test suite in its own virtual environment (VENV, default .venv-test): installs
# sem_fast[test] under requirements/constraints.txt (torch 2.13.0, triton 3.7.1, every extra, the test
# tools; scripts/setup_venv.sh test), then runs pytest over tests/ and, untimed
# (--benchmark-disable: each benchmark runs once with its correctness gate), benchmarks/.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
export VENV="${VENV:-.venv-test}"
scripts/setup_venv.sh test
exec "$VENV/bin/python" -m pytest tests benchmarks --benchmark-disable "$@"
