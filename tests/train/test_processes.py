"""A trainer against other processes: the run directory's lock (a live holder refuses a second
trainer, a killed holder's lock is taken over), and SIGTERM handled like Ctrl-C."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import pytest

from sem_fast.cli import main
from sem_fast.train import train
from sem_fast.train.run_lock import DirectoryInUseError
from tests.utils import ENDLESS_TRAIN, TIMEOUT_S, start_sem_fast, wait_for

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fcntl locks, /proc and signals")


def _epochs(run: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_second_trainer_is_refused_while_one_runs_and_takes_over_when_it_was_killed(tmp_path, tiny_config, capsys):
    run = tmp_path / "run"
    holder = start_sem_fast("train", *ENDLESS_TRAIN, "--out", str(run), log=tmp_path / "holder.log")
    try:
        wait_for(lambda: (run / "checkpoint.pt").is_file(), "the first trainer's first checkpoint")
        with pytest.raises(DirectoryInUseError, match=rf"{run} is in use by process {holder.pid} .*--out {run}"):
            train(tiny_config.replace(out=str(run)), resume=True)
        with pytest.raises(DirectoryInUseError):  # also when starting over: nothing is removed under a live run
            train(tiny_config.replace(out=str(run)), overwrite=True)
        assert (run / "checkpoint.pt").is_file()
    finally:
        holder.kill()  # SIGKILL: no chance to release anything itself
        holder.wait(TIMEOUT_S)
    assert json.loads((run / ".lock").read_text())["pid"] == holder.pid  # the dead holder's stale lock file
    done = _epochs(run)[-1]  # the killed run's last finished epoch (its checkpoint's)
    status = main(["train", "--resume", "--out", str(run), "--epochs", str(done + 1), "--no-progress"])
    out = capsys.readouterr()
    assert status == 0, out.err
    assert _epochs(run) == list(range(1, done + 2))  # one writer: every epoch once
    assert json.loads((run / "summary.json").read_text())["epochs"] == done + 1


def test_sigterm_stops_a_trainer_like_ctrl_c_and_says_how_to_continue(tmp_path):
    run = tmp_path / "run"
    trainer = start_sem_fast("train", *ENDLESS_TRAIN, "--out", str(run), log=tmp_path / "train.log")
    try:
        wait_for(lambda: (run / "checkpoint.pt").is_file(), "the trainer's first checkpoint")
        trainer.send_signal(signal.SIGTERM)
        assert trainer.wait(TIMEOUT_S) == 130
    finally:
        trainer.kill()
    log = (tmp_path / "train.log").read_text()
    assert f"sem-fast train: stopped by SIGTERM; continue with: sem-fast train --resume --out {run}" in log
    assert "Traceback" not in log
