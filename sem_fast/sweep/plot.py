"""``plot_<field>.png``: the sweep's metric against a swept numeric field (gamma, alpha, ...), one
line per combination of the other swept values and per table column, mean ± std over seeds
as error bars. Drawn with Pillow (`sem_fast.figure`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sem_fast.figure import PALETTE, Figure, nice_ticks
from sem_fast.sweep.results import METRIC_TITLES, Cell, column_label, varying_fields
from sem_fast.sweep.spec import Trial, format_value

#: Up to this many distinct x values are each given a tick; more get round ticks.
_MAX_VALUE_TICKS = 8


def plot_metric(trials: list[Trial], summaries: dict[str, dict[str, Any]], metric: str, field: str, path: Path) -> bool:
    """Draw ``metric`` against ``field`` over the finished trials to ``path``; False (nothing
    drawn) when fewer than two values of ``field`` have finished trials."""
    varying = varying_fields(trials)
    columns = {column_label(t.config) for t in trials}
    others = [k for k in varying if k != field]
    series: dict[str, dict[float, list[float]]] = {}
    for trial in trials:
        summary = summaries.get(trial.name)
        if summary is None or summary[metric] is None:
            continue
        parts = [column_label(trial.config)] if len(columns) > 1 else []
        parts += [f"{k}={format_value(getattr(trial.config, k))}" for k in others]
        label = ", ".join(parts) or "all trials"
        x = float(getattr(trial.config, field))
        series.setdefault(label, {}).setdefault(x, []).append(float(summary[metric]))
    xs = sorted({x for points in series.values() for x in points})
    if len(xs) < 2:
        return False
    cells = {label: {x: Cell(tuple(v)) for x, v in sorted(points.items())} for label, points in series.items()}
    lows = [c.mean - (c.std or 0.0) for points in cells.values() for c in points.values()]
    highs = [c.mean + (c.std or 0.0) for points in cells.values() for c in points.values()]
    y_ticks = nice_ticks(min(lows), max(highs))
    x_ticks = xs if len(xs) <= _MAX_VALUE_TICKS else nice_ticks(xs[0], xs[-1])
    colours = {label: PALETTE[i % len(PALETTE)] for i, label in enumerate(cells)}
    figure = Figure(
        f"{METRIC_TITLES[metric]} vs {field} (mean ± std over seeds)",
        xlim=(min(xs[0], x_ticks[0]), max(xs[-1], x_ticks[-1])), ylim=(y_ticks[0], y_ticks[-1]),
        legend=list(colours.items()), with_axes=True,
    )  # fmt: skip
    figure.axes(x_ticks=x_ticks, y_ticks=y_ticks, x_label=field, y_label=metric)
    for label, points in cells.items():
        colour = colours[label]
        figure.polyline([(x, c.mean) for x, c in points.items()], colour)
        for x, c in points.items():
            if c.std is not None:
                figure.error_bar(x, c.mean - c.std, c.mean + c.std, colour)
            figure.dot(x, c.mean, colour)
    figure.save(path)
    return True
