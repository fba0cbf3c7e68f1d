"""A sweep's results in the shape of the paper's tables: rows = methods, columns = dataset /
network, each cell the metric's mean ± std over the seeds of one configuration.

Written to the sweep directory:

- ``results.md``: the table in Markdown, with a line on unfinished trials;
- ``results.csv``: the same table, one row per method, ``<column> mean``/``std``/``n`` columns;
- ``trials.csv``: one row per trial (state, swept values, seed, metrics, run directory).

The std is the sample standard deviation (n - 1 in the denominator), empty for one seed.
"""

from __future__ import annotations

import csv
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from sem_fast.sweep.spec import Trial, format_value
from sem_fast.train import TrainConfig
from sem_fast.train.config import RESUMABLE_CHANGES
from sem_fast.train.run_files import SUMMARY_METRICS

#: Fields that make a table column (the paper's columns: network and dataset).
COLUMN_FIELDS = ("dataset", "model", "width", "depth", "widen")
#: Fields never named in row labels: the seed (averaged over), the recipe's name (its values
#: are shown), and fields that do not change the numbers.
_UNLABELLED = {"seed", "recipe", *RESUMABLE_CHANGES}
#: The paper's method names of each mixing.
MIX_NAMES = {"none": "ERM", "mixup": "Mixup", "cutmix": "CutMix", "switch": "Mixup/CutMix"}
DATA_NAMES = {"c10": "CIFAR-10", "c100": "CIFAR-100", "timagenet": "Tiny-ImageNet", "c10-bundled": "CIFAR-10 subset"}
METRIC_TITLES = {
    "final_test_acc": "test accuracy (%) after the last epoch",
    "best_test_acc": "best test accuracy (%)",
    "final_val_acc": "validation accuracy (%) after the last epoch",
}


@dataclass(frozen=True)
class Cell:
    """The metric of one configuration's seeds."""

    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float | None:
        """Sample standard deviation; None for a single seed."""
        return statistics.stdev(self.values) if self.n > 1 else None


@dataclass(frozen=True)
class ResultsTable:
    """``cells[(row, column)]``; rows and columns in the order of the sweep's trials."""

    metric: str
    rows: list[str]
    columns: list[str]
    cells: dict[tuple[str, str], Cell]
    seeds: int


def column_label(config: TrainConfig) -> str:
    """``'CIFAR-10 / PreActResNet18'`` (width shown when not the paper's 64), ``'CIFAR-100 / WRN-28-10'``."""
    net = f"WRN-{config.depth}-{config.widen}" if config.model == "wrn" else "PreActResNet18"
    if config.model == "prn18" and config.width != 64:
        net += f" (width {config.width})"
    return f"{DATA_NAMES.get(config.dataset, config.dataset)} / {net}"


def varying_fields(trials: Iterable[Trial]) -> list[str]:
    """`TrainConfig` fields (in declaration order) whose value differs between the trials'
    configurations, except the seed and fields that do not change the numbers."""
    configs = [t.config.to_dict() for t in trials]
    return [
        f.name for f in fields(TrainConfig)
        if f.name not in _UNLABELLED and len({repr(c[f.name]) for c in configs}) > 1
    ]  # fmt: skip


def method_label(config: TrainConfig, varying: list[str]) -> str:
    """The paper's row name (``'Mixup + SEM + ES'``), then the other varying fields that are not
    columns (``'(alpha=0.2, gamma=0.5)'``; gamma and the early stop only when the method uses them)."""
    name = MIX_NAMES[config.mix]
    if config.mix != "none":
        name += " + SEM" * (config.gamma > 0) + " + ES" * (config.early_stop_epochs > 0)
    unused = ("gamma", "es_epochs", "es_fraction")
    shown = [
        f"{k}={format_value(getattr(config, k))}" for k in varying
        if k not in COLUMN_FIELDS and k != "mix" and not (k in unused and getattr(config, k) == 0)
    ]  # fmt: skip
    return f"{name} ({', '.join(shown)})" if shown else name


def build_table(trials: list[Trial], summaries: dict[str, dict[str, Any]], metric: str, seeds: int) -> ResultsTable:
    """The table of ``metric`` over the finished trials (``summaries``: trial name -> summary)."""
    if metric not in SUMMARY_METRICS:
        raise ValueError(f"metric must be one of {SUMMARY_METRICS}, got {metric!r}")
    varying = varying_fields(trials)
    labels: dict[str, tuple[str, str]] = {}  # group -> (row, column)
    for trial in trials:
        labels.setdefault(trial.group, (method_label(trial.config, varying), column_label(trial.config)))
    seen: dict[tuple[str, str], str] = {}
    for group, key in list(labels.items()):  # two configurations with one label: tell them apart
        if seen.setdefault(key, group) != group:
            labels[group] = (f"{key[0]} [{group}]", key[1])
    values: dict[tuple[str, str], list[float]] = {}
    for trial in trials:
        if trial.name in summaries and summaries[trial.name].get(metric) is not None:
            values.setdefault(labels[trial.group], []).append(float(summaries[trial.name][metric]))
    rows = list(dict.fromkeys(row for row, _ in labels.values()))
    columns = list(dict.fromkeys(column for _, column in labels.values()))
    return ResultsTable(metric, rows, columns, {k: Cell(tuple(v)) for k, v in values.items()}, seeds)


def format_cell(cell: Cell | None, seeds: int) -> str:
    """``'93.41 ± 0.12'``; ``'(n=2)'`` appended when fewer seeds than the sweep's finished; ``'—'`` when none."""
    if cell is None:
        return "—"
    text = f"{cell.mean:.2f}" if cell.std is None else f"{cell.mean:.2f} ± {cell.std:.2f}"
    return text + (f" (n={cell.n})" if cell.n < seeds else "")


def to_markdown(table: ResultsTable, notes: list[str]) -> str:
    """The table as Markdown under a title naming the metric and the seeds, ``notes`` below it."""
    title = f"{METRIC_TITLES[table.metric]}, mean ± std over {table.seeds} seed(s)"
    lines = [f"### {title[0].upper()}{title[1:]}", "", "| Method | " + " | ".join(table.columns) + " |",
             "|---|" + "---|" * len(table.columns)]  # fmt: skip
    for row in table.rows:
        cells = [format_cell(table.cells.get((row, column)), table.seeds) for column in table.columns]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines + [""] + notes) + "\n"


def write_table_csv(table: ResultsTable, path: Path) -> None:
    """One row per method: ``method``, then ``<column> mean``, ``<column> std``, ``<column> n``."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method", *(f"{c} {stat}" for c in table.columns for stat in ("mean", "std", "n"))])
        for row in table.rows:
            out: list[Any] = [row]
            for column in table.columns:
                cell = table.cells.get((row, column))
                out += ["", "", 0] if cell is None else [cell.mean, "" if cell.std is None else cell.std, cell.n]
            writer.writerow(out)


def write_trials_csv(
    trials: list[Trial], states: dict[str, str], summaries: dict[str, dict[str, Any]], path: Path
) -> None:
    """One row per trial: name, state, the swept values, seed, the metrics, epochs, time, the CPU
    threads it trained on, directory."""
    axes = list(dict.fromkeys(k for t in trials for k in t.axes))
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["trial", "state", *axes, "seed", *SUMMARY_METRICS, "epochs", "train_time_s", "threads", "dir"])
        for t in trials:
            s = summaries.get(t.name, {})
            writer.writerow([t.name, states[t.name], *(format_value(t.axes[k]) if k in t.axes else "" for k in axes),
                             t.config.seed, *(s.get(m, "") for m in SUMMARY_METRICS), s.get("epochs", ""),
                             s.get("train_time_s", ""), s.get("threads", ""), t.dir])  # fmt: skip
