"""``plot_<field>.png`` / ``.svg``: the sweep's metric against a swept numeric field (gamma,
alpha, ...), one line per combination of the other swept values and per table column, mean ±
std over seeds as error bars. Drawn with matplotlib (`sem_fast.figure`, extra ``plots``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sem_fast.figure import new_figure, save_figure
from sem_fast.sweep.results import METRIC_TITLES, Cell, column_label, varying_fields
from sem_fast.sweep.spec import Trial, format_value

#: Up to this many distinct x values are each given a tick; more get matplotlib's ticks.
_MAX_VALUE_TICKS = 8
#: Horizontal shift between the lines, in points: the error bars of lines at the same x values
#: would hide each other (the data keep their exact x; only the drawing moves).
_DODGE_PT = 5.0
#: What the usual swept fields mean, for the x-axis label.
FIELD_LABELS = {
    "gamma": "γ (weight of the SEM term)",
    "alpha": "α (mixup's Beta(α, α))",
    "cutmix_alpha": "CutMix α",
    "label_smoothing": "label smoothing",
    "lr": "learning rate",
    "es_fraction": "early stop (fraction of the epochs)",
    "train_subset": "training images",
}


def metric_figure(trials: list[Trial], summaries: dict[str, dict[str, Any]], metric: str, field: str) -> Any:
    """The figure of ``metric`` against ``field`` over the finished trials (a matplotlib
    ``Figure``), or None when fewer than two values of ``field`` have finished trials."""
    varying = varying_fields(trials)
    columns = {column_label(t.config) for t in trials}
    others = [k for k in varying if k != field]
    series: dict[str, dict[float, list[float]]] = {}
    for trial in trials:
        summary = summaries.get(trial.name)
        if summary is None or summary.get(metric) is None:
            continue
        parts = [column_label(trial.config)] if len(columns) > 1 else []
        parts += [f"{k}={format_value(getattr(trial.config, k))}" for k in others]
        label = ", ".join(parts) or "all trials"
        x = float(getattr(trial.config, field))
        series.setdefault(label, {}).setdefault(x, []).append(float(summary[metric]))
    xs = sorted({x for points in series.values() for x in points})
    if len(xs) < 2:
        return None
    from matplotlib.transforms import ScaledTranslation

    fig = new_figure(6.4, 4.8)
    ax = fig.add_subplot()
    seeds = set()
    for i, (label, points) in enumerate(series.items()):
        cells = [Cell(tuple(points[x])) for x in sorted(points)]
        seeds |= {c.n for c in cells}
        shift = ScaledTranslation((i - (len(series) - 1) / 2) * _DODGE_PT / 72, 0, fig.dpi_scale_trans)
        xs_, means, stds = sorted(points), [c.mean for c in cells], [c.std or 0.0 for c in cells]
        ax.errorbar(xs_, means, yerr=stds, marker="o", markersize=4, capsize=4, linewidth=1.5, label=label,
                    transform=ax.transData + shift)  # fmt: skip
        ax.update_datalim([(x, m + sign * d) for x, m, d in zip(xs_, means, stds) for sign in (-1, 1)])
    ax.autoscale_view()  # from the data: the shifted drawings do not autoscale
    if len(xs) <= _MAX_VALUE_TICKS:
        ax.set_xticks(xs, [format_value(x) for x in xs])
    ax.set_xlabel(FIELD_LABELS.get(field, field))
    ax.set_ylabel(METRIC_TITLES[metric])
    n = "/".join(str(k) for k in sorted(seeds))
    ax.set_title(f"{METRIC_TITLES[metric].split(' (%)')[0].capitalize()} vs {field}: mean ± std over {n} seed(s)",
                 fontsize=10)  # fmt: skip
    ax.grid(True, color="0.92")
    if len(series) > 1 or label != "all trials":
        ax.legend(fontsize=8)
    return fig


def plot_metric(
    trials: list[Trial], summaries: dict[str, dict[str, Any]], metric: str, field: str, stem: Path
) -> list[Path]:
    """Draw `metric_figure` to ``<stem>.png`` and ``.svg``; returns the paths (none when there is
    nothing to draw)."""
    fig = metric_figure(trials, summaries, metric, field)
    return [] if fig is None else save_figure(fig, stem)
