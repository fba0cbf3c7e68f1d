"""Every kernel variant the launchers pick compiles for an H100/H200 (sm_90) without a GPU, within
the SASS budgets of issue 13 and without spills: ``python -m benchmarks.static --check`` (Triton
for sm_90a through Triton's whole compiler and ptxas; csrc/cuda through nvcc when it is on PATH).

The CPU interpreter runs kernels as Python and accepts code the GPU compiler rejects, so CPU-only
CI would not see such a bug; a kernel that spills or a mix variant over its instructions-per-element
budget fails here. It runs in a subprocess because the kernels of this process were created in
interpreter mode.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.static import MIX_CASES

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_every_variant_compiles_for_sm90_within_its_budget_without_spills():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    command = [sys.executable, "-m", "benchmarks.static", "--check"]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-4000:]
    backends = ["triton", "cuda"] if shutil.which("nvcc") else ["triton"]
    for backend in backends:
        for case in MIX_CASES:
            assert f"| {backend} | {case.name} |" in result.stdout, f"{backend} {case.name} not measured"
    assert "| triton | loss " in result.stdout
