"""``scripts/gpu_check.sh``, the one command of the first GPU run, as far as a CPU allows: its
syntax, every Python entry point and path it calls, its loud failure without a GPU, and its
smoke program (``scripts/gpu_smoke.py``) on the CPU."""

import importlib
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sem_fast import available_backends

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_check.sh"


def test_script_is_valid_bash():
    result = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_every_python_module_and_path_it_calls_exists():
    text = SCRIPT.read_text()
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    modules = set(re.findall(r"-m (?!\$)([\w.]+)", code)) | set(re.findall(r'BENCH="(\w+)', code))
    assert {"pytest", "benchmarks.report"} <= modules
    for module in modules:
        assert importlib.util.find_spec(module) is not None, f"python -m {module}: no such module"
    paths = set(re.findall(r"(?<![\w/$])((?:tests|benchmarks|scripts)/[\w/]+(?:\.\w+)?|setup\.py)", code))
    assert {"setup.py", "scripts/gpu_smoke.py", "tests/ops", "benchmarks/bench_mix.py"} <= paths
    for path in paths:
        assert (REPO / path).exists(), f"{path} does not exist"
    for name in re.findall(r"from sem_fast import ([\w, ]+)", code):
        for attr in name.split(", "):
            assert hasattr(importlib.import_module("sem_fast"), attr), attr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the failure without a GPU")
def test_without_a_gpu_it_stops_at_the_first_step_and_names_it(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"} | {"PYTHON": sys.executable}
    result = subprocess.run(
        ["bash", str(SCRIPT), str(tmp_path)], capture_output=True, text=True, env=env, cwd=REPO, check=False
    )
    assert result.returncode == 1
    assert "GPU CHECK FAILED: step 'preflight'" in result.stderr
    assert "no CUDA device" in (tmp_path / "preflight.log").read_text()


@pytest.mark.skipif(available_backends("cpu")["native"] is not None, reason="needs the compiled extension")
def test_smoke_program_passes_on_the_cpu():
    env = dict(os.environ, TRITON_INTERPRET="1")
    smoke = [sys.executable, "scripts/gpu_smoke.py", "--device", "cpu"]
    result = subprocess.run(smoke, capture_output=True, text=True, env=env, cwd=REPO, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "FAIL" not in result.stdout and result.stdout.count(" ok") >= 30
