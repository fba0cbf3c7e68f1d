"""A packed sweep (``--parallel 2``) against kills: its trial processes end with it whether it is
SIGKILLed or SIGTERMed, and a re-run then finishes every trial with each epoch logged once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from sem_fast.sweep import load_spec, run_sweep
from tests.utils import TIMEOUT_S, children, gone, start_sem_fast, wait_for

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc, prctl and signals")

#: Two trials of the tiny demo (0.1 s per epoch on one thread); ``{epochs}`` long.
SPEC = """
recipe = "demo"
seeds = [0]
[fixed]
width = 4
epochs = {epochs}
es_fraction = 0.0
batch_size = 16
max_steps_per_epoch = 2
eval_every = {epochs}
progress = false
plots = false
[grid]
gamma = [0.0, 1.0]
"""


def _start(tmp_path: Path, epochs: int) -> tuple[subprocess.Popen, Path]:
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC.format(epochs=epochs))
    out = tmp_path / "out"
    sweep = start_sem_fast("sweep", str(spec), "--out", str(out), "--parallel", "2", "--threads", "1",
                           log=tmp_path / "sweep.log")  # fmt: skip
    wait_for(lambda: len(list(out.glob("trials/*/checkpoint.pt"))) == 2, "both trials' first checkpoints")
    return sweep, out


def _kill_leftovers(sweep: subprocess.Popen, trials: list[int]) -> None:
    """After a failed test: leave no orphan behind."""
    sweep.kill()
    for pid in trials:
        if not gone(pid):
            os.kill(pid, signal.SIGKILL)


def test_trials_of_a_sigkilled_sweep_end_with_it(tmp_path):
    sweep, _ = _start(tmp_path, epochs=100_000)
    trials = children(sweep.pid)
    try:
        assert len(trials) == 2
        sweep.kill()
        sweep.wait(TIMEOUT_S)
        wait_for(lambda: all(gone(pid) for pid in trials), "the orphaned trial processes to end", timeout=30)
    finally:
        _kill_leftovers(sweep, trials)


def test_a_sigtermed_sweep_stops_its_trials_and_a_rerun_logs_every_epoch_once(tmp_path):
    epochs = 40
    sweep, out = _start(tmp_path, epochs=epochs)
    trials = children(sweep.pid)
    try:
        sweep.send_signal(signal.SIGTERM)
        assert sweep.wait(TIMEOUT_S) == 130
        assert all(gone(pid) for pid in trials)
    finally:
        _kill_leftovers(sweep, trials)
    assert "run the same command again to continue" in (tmp_path / "sweep.log").read_text()
    report = run_sweep(load_spec(tmp_path / "spec.toml"), out, threads=1, log=lambda line: None)
    assert len(report.outcomes.finished) + len(report.skipped) == 2 and not report.outcomes.failed
    for trial in (out / "trials").iterdir():
        lines = (trial / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(line)["epoch"] for line in lines] == list(range(1, epochs + 1)), trial.name
