"""Figures with matplotlib (the optional extra ``plots``): a canvas without pyplot's global state
and one way to save it, PNG and SVG side by side.

Used by the learning curves of a run (`sem_fast.train.curves`), the sweep plots
(`sem_fast.sweep.plot`) and the embedding figure (`sem_fast.eval.embedding`), so it sits beside
all three. matplotlib is imported here only, when a figure is drawn; without it every caller
raises an ``ImportError`` that names the extra to install.

    fig = new_figure(6.4, 4.8)
    ax = fig.add_subplot()
    ax.errorbar([0, 1], [41, 55], yerr=[1, 2], label="alpha=1")
    save_figure(fig, Path("plot_gamma"))   # plot_gamma.png + plot_gamma.svg
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sem_fast.extras import require

#: Resolution of the PNGs: 150 dpi keeps 8-point text legible at a 6.4-inch width (960 pixels).
PNG_DPI = 150
#: Formats written by `save_figure`: a bitmap to look at, a vector file to print or edit.
FORMATS = ("png", "svg")


def new_figure(width: float, height: float) -> Any:
    """A ``matplotlib.figure.Figure`` of ``width`` x ``height`` inches, drawn by the Agg renderer
    (no display, no pyplot state: safe in any process and thread)."""
    require("matplotlib", "drawing figures")
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def save_figure(fig: Any, stem: Path) -> list[Path]:
    """Write ``fig`` to ``<stem>.png`` and ``<stem>.svg``, each atomically (a reader never sees
    half a file); returns the paths."""
    paths = []
    for fmt in FORMATS:
        path = stem.with_name(f"{stem.name}.{fmt}")
        tmp = path.with_name(f".{path.name}.tmp")
        fig.savefig(tmp, format=fmt, dpi=PNG_DPI)
        os.replace(tmp, path)
        paths.append(path)
    return paths
