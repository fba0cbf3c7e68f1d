"""The examples keep working: run each for a few steps."""

import importlib.util
import math
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_own_training_loop_runs_and_reports_a_finite_loss(capsys):
    loss = _load("own_training_loop").main(["--steps", "4", "--batch-size", "8"])
    assert math.isfinite(loss) and 0 < loss < 10
    assert "step 4/4" in capsys.readouterr().out
