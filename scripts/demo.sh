#!/usr/bin/env bash
# Install sem_fast into a virtual environment (VENV, default .venv) and run the main job: a short
# SEM training run on the CIFAR-10 subset shipped in the repository (about 2 minutes on 2 CPU cores).
set -euo pipefail
cd "$(dirname "$0")/.."
export VENV="${VENV:-.venv}"
scripts/setup_venv.sh runtime
exec "$VENV/bin/sem-fast" train --recipe demo --overwrite "$@"
