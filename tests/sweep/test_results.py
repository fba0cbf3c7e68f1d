"""The results table from given summaries (no training): paper-shaped rows and columns, mean and
sample std over seeds, missing cells and short seed counts marked."""

from __future__ import annotations

import statistics

from sem_fast.sweep import expand, parse_spec
from sem_fast.sweep.results import build_table, format_cell, to_markdown

RECIPES = ["prn18-c10-erm", "prn18-c10-mixup-sem", "wrn28-10-c10-mixup", "wrn28-10-c10-mixup-sem"]
#: Test accuracy per (recipe, seed); wrn28-10-c10-mixup-sem seed 2 has not finished.
ACCURACY = {
    ("prn18-c10-erm", 0): 94.0, ("prn18-c10-erm", 1): 94.5, ("prn18-c10-erm", 2): 95.5,
    ("prn18-c10-mixup-sem", 0): 96.0, ("prn18-c10-mixup-sem", 1): 96.25, ("prn18-c10-mixup-sem", 2): 95.75,
    ("wrn28-10-c10-mixup", 0): 97.0, ("wrn28-10-c10-mixup", 1): 97.5, ("wrn28-10-c10-mixup", 2): 97.25,
    ("wrn28-10-c10-mixup-sem", 0): 97.5, ("wrn28-10-c10-mixup-sem", 1): 98.0,
}  # fmt: skip


def _table(tmp_path):
    trials = expand(parse_spec({"seeds": [0, 1, 2], "grid": {"recipe": RECIPES}}, "flags"), tmp_path)
    summaries = {
        t.name: {"final_test_acc": ACCURACY[(t.config.recipe, t.config.seed)], "best_test_acc": None}
        for t in trials if (t.config.recipe, t.config.seed) in ACCURACY
    }  # fmt: skip
    return build_table(trials, summaries, "final_test_acc", seeds=3)


def test_rows_are_methods_and_columns_are_dataset_and_network(tmp_path):
    table = _table(tmp_path)
    assert table.rows == ["ERM", "Mixup + SEM (gamma=1)", "Mixup"]
    assert table.columns == ["CIFAR-10 / PreActResNet18", "CIFAR-10 / WRN-28-10"]
    assert ("ERM", "CIFAR-10 / WRN-28-10") not in table.cells  # ERM ran on PreActResNet18 only


def test_cells_hold_the_mean_and_sample_std_over_seeds(tmp_path):
    table = _table(tmp_path)
    erm = table.cells[("ERM", "CIFAR-10 / PreActResNet18")]
    assert erm.values == (94.0, 94.5, 95.5) and erm.mean == statistics.fmean([94.0, 94.5, 95.5])
    assert erm.std == statistics.stdev([94.0, 94.5, 95.5])  # n - 1 in the denominator
    assert format_cell(erm, 3) == f"{erm.mean:.2f} ± {erm.std:.2f}"
    short = table.cells[("Mixup + SEM (gamma=1)", "CIFAR-10 / WRN-28-10")]
    assert short.n == 2 and format_cell(short, 3) == "97.75 ± 0.35 (n=2)"


def test_markdown_marks_missing_cells_and_keeps_the_notes(tmp_path):
    markdown = to_markdown(_table(tmp_path), ["a note"])
    assert "| Method | CIFAR-10 / PreActResNet18 | CIFAR-10 / WRN-28-10 |" in markdown
    assert "| ERM | 94.67 ± 0.76 | — |" in markdown
    assert "| Mixup | — | 97.25 ± 0.25 |" in markdown
    assert "mean ± std over 3 seed(s)" in markdown and markdown.rstrip().endswith("a note")


def test_a_single_seed_shows_the_value_without_std(tmp_path):
    trials = expand(parse_spec({"seeds": [4], "grid": {"gamma": [0.0, 0.5]}}, "flags"), tmp_path)
    summaries = {t.name: {"final_test_acc": 90.0 + t.config.gamma} for t in trials}
    table = build_table(trials, summaries, "final_test_acc", seeds=1)
    assert table.rows == ["Mixup", "Mixup + SEM (gamma=0.5)"]
    assert [format_cell(table.cells[(r, table.columns[0])], 1) for r in table.rows] == ["90.00", "90.50"]
