"""A dependency-free progress line for the training loop (one line per epoch, redrawn in place),
and `StageProgress`, the one-line-per-stage progress of long jobs such as ``sem-fast eval``."""

from __future__ import annotations

import sys
import time
from typing import TextIO

#: Characters of the bar itself.
BAR_WIDTH = 24
#: Seconds between progress lines inside an epoch when the output is not a terminal (a log file,
#: a pipe): an epoch of a few seconds gets no such line, a long CPU epoch one a minute, so a
#: 200-epoch log stays readable and a stalled run still shows when it last moved.
LOG_INTERVAL_S = 60.0


def format_duration(seconds: float) -> str:
    """``75.2`` -> ``'1:15'``, ``3725`` -> ``'1:02:05'``."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressLine:
    """``epoch 3/15 [#########.......]  23/46  412 img/s  loss 1.92 ce 1.91 sem 0.009 lr 0.081 eta 0:04 run 1:02``.

    ``eta`` is the rest of the epoch, ``run`` the rest of the run (training and evaluation,
    from the pace of the steps done since this process started, epoch ``first_epoch + 1``).
    On a terminal the line is redrawn with ``\\r`` on every `update`; elsewhere (logs, pipes) the
    finished line of each epoch is written, and inside an epoch one line per `LOG_INTERVAL_S`.
    """

    def __init__(
        self, epochs: int, steps: int, *, stream: TextIO | None = None, enabled: bool = True, first_epoch: int = 0
    ) -> None:
        self.epochs, self.steps = epochs, steps
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.live = enabled and self.stream.isatty()
        self.epoch, self.start = 0, time.perf_counter()
        self.first_epoch, self.session_start = first_epoch, self.start
        self._width, self._last_log = 0, self.start

    def start_epoch(self, epoch: int) -> None:
        """Begin 1-based ``epoch``."""
        self.epoch, self.start = epoch, time.perf_counter()
        self._last_log = self.start

    def update(self, step: int, images: int, stats: dict[str, float]) -> None:
        """Redraw after ``step`` of the epoch's steps, ``images`` trained so far this epoch."""
        now = time.perf_counter()
        if self.live:
            self._draw(self._line(step, images, now - self.start, stats), end="")
        elif self.enabled and now - self._last_log >= LOG_INTERVAL_S and step < self.steps:
            self._last_log = now
            self._draw(self._line(step, images, now - self.start, stats), end="\n")

    def finish_epoch(self, step: int, images: int, seconds: float, stats: dict[str, float], suffix: str = "") -> None:
        """Write the epoch's final line (``images`` trained in ``seconds``) with ``suffix`` appended."""
        if self.enabled:
            self._draw(self._line(step, images, seconds, stats) + (f"  {suffix}" if suffix else ""), end="\n")
            self._width = 0

    def _run_left(self, step: int) -> float:
        """Seconds left in the run at ``step`` of the current epoch, at the pace of this session."""
        done = (self.epoch - 1 - self.first_epoch) * self.steps + step
        left = (self.epochs - self.epoch) * self.steps + self.steps - step
        return (time.perf_counter() - self.session_start) / done * left if done else 0.0

    def _line(self, step: int, images: int, elapsed: float, stats: dict[str, float]) -> str:
        filled = BAR_WIDTH * step // max(self.steps, 1)
        rate = images / elapsed if elapsed > 0 else 0.0
        eta = elapsed / step * (self.steps - step) if step else 0.0
        values = "  ".join(f"{k} {v:.4g}" for k, v in stats.items())
        clock = f"eta {format_duration(eta)}" if step < self.steps else f"{format_duration(elapsed)}"
        if self.epoch < self.epochs or step < self.steps:
            clock += f"  run eta {format_duration(self._run_left(step))}"
        return (
            f"epoch {self.epoch}/{self.epochs} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] "
            f"{step}/{self.steps}  {rate:.0f} img/s  {values}  {clock}"
        )

    def _draw(self, line: str, end: str) -> None:
        pad = " " * max(0, self._width - len(line))
        self.stream.write(("\r" if self.live else "") + line + pad + end)
        self.stream.flush()
        self._width = len(line)


class StageProgress:
    """``eval [12/52] on the fly: gaussian_noise severity 3  1:02 elapsed  eta 3:40``: one line per
    stage of a job of ``stages`` equal-weight stages, to ``stream`` (terminal or not)."""

    def __init__(self, name: str, stages: int, *, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.name, self.stages, self.enabled = name, stages, enabled
        self.stream = stream if stream is not None else sys.stderr
        self.done, self.start = 0, time.perf_counter()

    def step(self, what: str) -> None:
        """Report that stage ``what`` begins."""
        if self.enabled:
            elapsed = time.perf_counter() - self.start
            eta = f"  eta {format_duration(elapsed / self.done * (self.stages - self.done))}" if self.done else ""
            self.stream.write(f"{self.name} [{self.done + 1}/{self.stages}] {what}  "
                              f"{format_duration(elapsed)} elapsed{eta}\n")  # fmt: skip
            self.stream.flush()
        self.done += 1
