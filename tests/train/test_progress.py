"""The training progress line: an ETA for the epoch and for the whole run, and progress inside
long epochs when the output is a log file, not a terminal."""

from __future__ import annotations

import io

from sem_fast.train import progress
from sem_fast.train.progress import LOG_INTERVAL_S, ProgressLine

STATS = {"loss": 2.0}


def test_a_log_gets_a_line_per_minute_inside_an_epoch_with_the_runs_eta(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: clock[0])
    log = io.StringIO()  # not a terminal
    line = ProgressLine(epochs=10, steps=100, stream=log, first_epoch=4)  # resumed after epoch 4
    line.start_epoch(5)
    for step in range(1, 101):
        clock[0] += 1.5  # 150 s epochs: two in-epoch lines, at 60 s and 120 s
        line.update(step, 16 * step, STATS)
    line.finish_epoch(100, 1600, 150.0, STATS, suffix="test acc 50.00%")
    lines = log.getvalue().splitlines()
    assert len(lines) == 3 and all("\r" not in text for text in lines)
    assert lines[0].startswith("epoch 5/10 [#########......") and " 40/100  11 img/s  loss 2  " in lines[0]
    # 40 steps in 60 s: 60 steps (90 s) left in the epoch, 5 more epochs of 100 steps (750 s) in the run
    assert "eta 1:30  run eta 14:00" in lines[0]
    assert lines[2].endswith("2:30  run eta 12:30  test acc 50.00%")  # 5 epochs x 150 s left
    assert LOG_INTERVAL_S == 60.0


def test_a_short_epoch_in_a_log_is_one_line_and_the_last_epoch_has_no_run_eta(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: clock[0])
    log = io.StringIO()
    line = ProgressLine(epochs=1, steps=10, stream=log)
    line.start_epoch(1)
    for step in range(1, 11):
        clock[0] += 0.5
        line.update(step, 16 * step, STATS)
    line.finish_epoch(10, 160, 5.0, STATS)
    assert log.getvalue().splitlines() == [
        "epoch 1/1 [########################] 10/10  32 img/s  loss 2  0:05"
    ]
