"""A run's learning curves, ``curves.png`` / ``curves.svg`` in its directory, redrawn after the
epochs from the epoch records (`sem_fast.train.metrics_log.COLUMNS`): training loss, mixed
cross-entropy and the test/validation losses; the SEM term; training (mixed), test and
validation accuracy; the learning rate. Epochs of the early stop (no mixing) are shaded."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from sem_fast.figure import new_figure, save_figure
from sem_fast.train.config import TrainConfig
from sem_fast.train.run_files import CURVES_STEM

#: ``(record key, legend label, line style)`` of each panel's series; points where the record
#: has no value (epochs without evaluation) are left out.
_PANELS = {
    "loss": [("train_loss", "training loss (CE + γ·SEM, mixed)", "-"), ("train_ce", "training CE (mixed)", "--"),
             ("test_loss", "test CE (clean)", "-o"), ("val_loss", "validation CE (clean)", "-s")],
    "sem": [("train_sem", "SEM term (mixed vs equivariant features)", "-")],
    "accuracy": [("train_acc", "training (mixed, λ-weighted)", "-"), ("test_acc", "test", "-o"),
                 ("val_acc", "validation", "-s")],
    "lr": [("lr", "learning rate (last step of the epoch)", "-")],
}  # fmt: skip
_Y_LABELS = {"loss": "loss", "sem": "SEM distance", "accuracy": "accuracy (%)", "lr": "learning rate"}
_TITLES = {"loss": "Losses", "sem": "SEM term", "accuracy": "Accuracy", "lr": "Learning rate"}
#: The curves are redrawn after an epoch once the run has trained this many times as long as the
#: last drawing took (0.5-1.5 s on a 2-core CPU), so drawing costs at most 1/20 = 5% of the run:
#: after every epoch of a real run, every few epochs of the 6-second epochs of the CPU demo.
DRAW_BUDGET = 20


class LearningCurves:
    """Redraws a run's curves after an epoch when the time budget allows, and after the last one."""

    def __init__(self, config: TrainConfig, run_dir: Path) -> None:
        self.config, self.run_dir = config, run_dir
        self._cost, self._drawn_at = 0.0, -math.inf

    def after_epoch(self, history: list[dict[str, Any]]) -> None:
        """Called with the records so far after each epoch; draws within `DRAW_BUDGET`."""
        start = time.perf_counter()
        if history[-1]["epoch"] == self.config.epochs or start - self._drawn_at >= DRAW_BUDGET * self._cost:
            draw_learning_curves(history, self.config, self.run_dir)
            self._drawn_at = time.perf_counter()
            self._cost = self._drawn_at - start


def draw_learning_curves(history: list[dict[str, Any]], config: TrainConfig, run_dir: Path) -> list[Path]:
    """Draw `curves_figure` to ``run_dir/curves.png`` and ``.svg``; returns the paths."""
    return save_figure(curves_figure(history, config), run_dir / CURVES_STEM)


def curves_figure(history: list[dict[str, Any]], config: TrainConfig) -> Any:
    """The learning curves of ``history`` (the run's epoch records so far), a matplotlib ``Figure``
    of four panels: losses, SEM term, accuracy, learning rate."""
    fig = new_figure(10.0, 7.0)
    axes = fig.subplots(2, 2, sharex=True).ravel()
    epochs = [r["epoch"] for r in history]
    early_stop = [r["epoch"] for r in history if r["mix"] == "none" and config.mix != "none"]
    for ax, (panel, series) in zip(axes, _PANELS.items()):
        for key, label, style in series:
            points = [(r["epoch"], r[key]) for r in history if r.get(key) is not None]
            if points:
                x, y = zip(*points)
                ax.plot(x, y, style, label=label, markersize=3)
        if early_stop:
            ax.axvspan(early_stop[0] - 0.5, early_stop[-1] + 0.5, color="0.9", zorder=0, label="early stop (no mixing)")
        if panel == "sem" and config.gamma == 0:
            ax.text(0.5, 0.5, "no SEM term (γ = 0)", transform=ax.transAxes, ha="center", va="center", color="0.4")
        ax.set_title(_TITLES[panel])
        ax.set_ylabel(_Y_LABELS[panel])
        ax.grid(True, color="0.92")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    for ax in axes[2:]:
        ax.set_xlabel("epoch")
        ax.set_xlim(0.5, max(config.epochs, epochs[-1]) + 0.5)
        ax.xaxis.get_major_locator().set_params(integer=True)
    method = "ERM" if config.mix == "none" else config.mix + (f" + SEM (γ = {config.gamma:g})" if config.gamma else "")
    fig.suptitle(f"{config.recipe}: {method}, {config.dataset}, {config.model} — epoch {epochs[-1]} of {config.epochs}")
    return fig
