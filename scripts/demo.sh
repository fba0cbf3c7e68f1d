#!/usr/bin/env bash
# Install sem_fast into a virtual environment (VENV, default .venv) with what every command of the
# README uses (scripts/setup_venv.sh demo), and run the main job: a short SEM training run on the
# CIFAR-10 subset shipped in the repository (about 2 minutes on 2 CPU cores). Afterwards
# `source .venv/bin/activate` gives the README's commands (sem-fast, pytest, python) that environment.
set -euo pipefail
cd "$(dirname "$0")/.."
export VENV="${VENV:-.venv}"
scripts/setup_venv.sh demo
"$VENV/bin/sem-fast" info   # what was installed: extension, backends per device, extras
exec "$VENV/bin/sem-fast" train --recipe demo --overwrite "$@"
