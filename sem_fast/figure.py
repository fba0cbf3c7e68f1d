"""`Figure`: the small Pillow canvas behind the package's PNGs (no matplotlib needed).

A white RGB image with a title, a row of legend entries under it and a framed plot area that
maps data coordinates to pixels (y grows upwards). Used by the embedding figure
(`sem_fast.eval.embedding`) and the sweep plots (`sem_fast.sweep.plot`), so it sits beside both.

    fig = Figure("accuracy vs gamma", xlim=(0, 1), ylim=(40, 60), legend=[("alpha=1", PALETTE[0])])
    fig.axes(x_ticks=[0, 0.5, 1], y_ticks=[40, 50, 60], x_label="gamma", y_label="test acc %")
    fig.polyline([(0, 41), (1, 55)], PALETTE[0]); fig.dot(0, 41, PALETTE[0])
    fig.save("plot.png")
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

Colour = tuple[int, int, int]

#: Line colours of the series (matplotlib's "tab10" cycle, so the PNGs read like the usual plots).
PALETTE: tuple[Colour, ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)  # fmt: skip
#: Default canvas size in pixels.
SIZE = (720, 540)
# Layout in pixels: outer margin, height of a text line, marker radius, legend marker-to-text gap.
_MARGIN, _LINE, _RADIUS, _GAP = 40, 16, 3, 10
# Extra room left of and below the plot area for tick labels and axis titles.
_AXES_LEFT, _AXES_BOTTOM = 40, 32
_BLACK, _GREY = (0, 0, 0), (200, 200, 200)


class Figure:
    """A canvas of ``size`` pixels whose plot area shows ``xlim`` x ``ylim`` in data units.

    ``legend``: ``(label, colour)`` entries, laid out left to right under the title and wrapped
    onto more rows when they do not fit. ``with_axes`` leaves room for `axes` (tick labels and
    axis titles); without it the frame alone is drawn (projections with no meaningful units).
    """

    def __init__(
        self,
        title: str,
        *,
        xlim: tuple[float, float],
        ylim: tuple[float, float],
        legend: Sequence[tuple[str, Colour]] = (),
        size: tuple[int, int] = SIZE,
        with_axes: bool = False,
    ) -> None:
        from PIL import Image, ImageDraw

        self.image = Image.new("RGB", size, "white")
        self.draw = ImageDraw.Draw(self.image)
        width, height = size
        self.draw.text((_MARGIN, 8), title, fill=_BLACK)
        rows = self._legend(legend, top=8 + _LINE, right=width - _MARGIN)
        left = _MARGIN + (_AXES_LEFT if with_axes else 0)
        bottom = height - _MARGIN - (_AXES_BOTTOM if with_axes else 0)
        top = 8 + _LINE * (rows + 1 + with_axes) + 8  # with axes, a line for the y-axis title
        self.box = (left, top, width - _MARGIN, bottom)
        self.xlim, self.ylim = _widen(xlim), _widen(ylim)
        x0, y0, x1, y1 = self.box
        self.draw.rectangle([x0 - 8, y0 - 8, x1 + 8, y1 + 8], outline=_BLACK)

    def _legend(self, entries: Sequence[tuple[str, Colour]], *, top: int, right: int) -> int:
        """Draw the legend rows; returns how many rows were used."""
        x, y, rows = _MARGIN, top, 1 if entries else 0
        for label, colour in entries:
            width = 2 * _RADIUS + _GAP + int(self.draw.textlength(label)) + 2 * _GAP
            if x + width > right and x > _MARGIN:
                x, y, rows = _MARGIN, y + _LINE, rows + 1
            cy = y + _LINE // 2
            self.draw.ellipse([x, cy - _RADIUS, x + 2 * _RADIUS, cy + _RADIUS], fill=colour)
            self.draw.text((x + 2 * _RADIUS + _GAP // 2, y + 2), label, fill=_BLACK)
            x += width
        return rows

    def to_pixel(self, x: float, y: float) -> tuple[float, float]:
        """Data ``(x, y)`` -> pixel ``(column, row)`` of the image."""
        x0, y0, x1, y1 = self.box
        (xa, xb), (ya, yb) = self.xlim, self.ylim
        return x0 + (x - xa) / (xb - xa) * (x1 - x0), y1 - (y - ya) / (yb - ya) * (y1 - y0)

    def dot(self, x: float, y: float, colour: Colour, radius: int = _RADIUS) -> None:
        """A filled marker at data ``(x, y)``."""
        px, py = self.to_pixel(x, y)
        self.draw.ellipse([px - radius, py - radius, px + radius, py + radius], fill=colour)

    def ring(self, x: float, y: float, colour: Colour, radius: int = _RADIUS + 1) -> None:
        """An open marker at data ``(x, y)``."""
        px, py = self.to_pixel(x, y)
        self.draw.ellipse([px - radius, py - radius, px + radius, py + radius], outline=colour)

    def polyline(self, points: Sequence[tuple[float, float]], colour: Colour, width: int = 2) -> None:
        """Straight segments through data ``points``."""
        if len(points) > 1:
            self.draw.line([self.to_pixel(x, y) for x, y in points], fill=colour, width=width)

    def error_bar(self, x: float, low: float, high: float, colour: Colour) -> None:
        """A vertical bar from ``low`` to ``high`` at ``x`` with short caps."""
        px, top = self.to_pixel(x, high)
        _, bottom = self.to_pixel(x, low)
        self.draw.line([(px, top), (px, bottom)], fill=colour, width=1)
        for py in (top, bottom):
            self.draw.line([(px - _RADIUS, py), (px + _RADIUS, py)], fill=colour, width=1)

    def axes(self, *, x_ticks: Sequence[float], y_ticks: Sequence[float], x_label: str, y_label: str) -> None:
        """Tick labels (with light grid lines) and axis titles; needs ``with_axes=True``."""
        x0, y0, x1, y1 = self.box
        for value in x_ticks:
            px, _ = self.to_pixel(value, self.ylim[0])
            self.draw.line([(px, y0 - 8), (px, y1 + 8)], fill=_GREY)
            text = f"{value:g}"
            self.draw.text((px - self.draw.textlength(text) / 2, y1 + 12), text, fill=_BLACK)
        for value in y_ticks:
            _, py = self.to_pixel(self.xlim[0], value)
            self.draw.line([(x0 - 8, py), (x1 + 8, py)], fill=_GREY)
            text = f"{value:g}"
            self.draw.text((x0 - 12 - self.draw.textlength(text), py - _LINE // 2 + 2), text, fill=_BLACK)
        self.draw.text(((x0 + x1 - self.draw.textlength(x_label)) / 2, y1 + 12 + _LINE), x_label, fill=_BLACK)
        self.draw.text((_MARGIN, y0 - 8 - _LINE), y_label, fill=_BLACK)

    def save(self, path: str | Path) -> None:
        self.image.save(path)


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values (steps of 1, 2 or 5 times a power of ten) covering
    ``[low, high]``; a single value when ``low == high``."""
    if high <= low:
        return [low]
    raw = (high - low) / max(count - 1, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(low / step) * step
    ticks, value = [], first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    if ticks[-1] < high:
        ticks.append(round(value, 10))
    return ticks


def _widen(limits: tuple[float, float]) -> tuple[float, float]:
    """``limits`` with a zero-width range opened by one unit (all points equal) so they map to the middle."""
    low, high = limits
    return (low - 0.5, high + 0.5) if high <= low else (low, high)
