"""A dependency-free progress line for the training loop (one line per epoch, redrawn in place)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

#: Characters of the bar itself.
BAR_WIDTH = 24


def format_duration(seconds: float) -> str:
    """``75.2`` -> ``'1:15'``, ``3725`` -> ``'1:02:05'``."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressLine:
    """``epoch 3/15 [#########.......]  23/46  412 img/s  loss 1.92 ce 1.91 sem 0.009 lr 0.081 eta 0:04``.

    On a terminal the line is redrawn with ``\\r`` on every `update`; elsewhere (logs, pipes)
    only the finished line of each epoch is written, so logs stay one line per epoch.
    """

    def __init__(self, epochs: int, steps: int, *, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.epochs, self.steps = epochs, steps
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.live = enabled and self.stream.isatty()
        self.epoch, self.start = 0, time.perf_counter()
        self._width = 0

    def start_epoch(self, epoch: int) -> None:
        """Begin 1-based ``epoch``."""
        self.epoch, self.start = epoch, time.perf_counter()

    def update(self, step: int, images: int, stats: dict[str, float]) -> None:
        """Redraw after ``step`` of the epoch's steps, ``images`` trained so far this epoch."""
        if self.live:
            self._draw(self._line(step, images, time.perf_counter() - self.start, stats), end="")

    def finish_epoch(self, step: int, images: int, seconds: float, stats: dict[str, float], suffix: str = "") -> None:
        """Write the epoch's final line (``images`` trained in ``seconds``) with ``suffix`` appended."""
        if self.enabled:
            self._draw(self._line(step, images, seconds, stats) + (f"  {suffix}" if suffix else ""), end="\n")
            self._width = 0

    def _line(self, step: int, images: int, elapsed: float, stats: dict[str, float]) -> str:
        filled = BAR_WIDTH * step // max(self.steps, 1)
        rate = images / elapsed if elapsed > 0 else 0.0
        eta = elapsed / step * (self.steps - step) if step else 0.0
        values = "  ".join(f"{k} {v:.4g}" for k, v in stats.items())
        clock = f"eta {format_duration(eta)}" if step < self.steps else f"{format_duration(elapsed)}"
        return (
            f"epoch {self.epoch}/{self.epochs} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] "
            f"{step}/{self.steps}  {rate:.0f} img/s  {values}  {clock}"
        )

    def _draw(self, line: str, end: str) -> None:
        pad = " " * max(0, self._width - len(line))
        self.stream.write(("\r" if self.live else "") + line + pad + end)
        self.stream.flush()
        self._width = len(line)
