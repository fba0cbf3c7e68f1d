"""The learning curves of a run: written during training (PNG + SVG), showing the epoch records,
the early stop shaded; redrawn within a time budget."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sem_fast.train import curves, train
from sem_fast.train.curves import LearningCurves, curves_figure


@pytest.fixture(scope="module")
def curved_run(tmp_path_factory):
    """3 epochs, the last one the early stop, evaluated every epoch, with a validation split:
    ``(config, records, files seen after epoch 1)``."""
    from sem_fast.train import get_recipe

    config = get_recipe("demo").replace(
        out=str(tmp_path_factory.mktemp("curves") / "run"), width=4, epochs=3, es_epochs=1, batch_size=16,
        max_steps_per_epoch=2, progress=False, val_split=0.1,
    )  # fmt: skip
    seen = []
    train(config, on_epoch_end=lambda r: seen.extend(sorted(p.name for p in Path(config.run_dir).glob("curves.*"))))
    records = [json.loads(line) for line in Path(config.run_dir, "metrics.jsonl").read_text().splitlines()]
    return config, records, seen


def test_the_curves_are_written_from_the_first_epoch_on_as_png_and_svg(curved_run):
    from PIL import Image

    config, _, seen = curved_run
    assert seen[:2] == ["curves.png", "curves.svg"]  # already after epoch 1
    with Image.open(Path(config.run_dir, "curves.png")) as image:
        assert image.size == (1500, 1050)  # 10 x 7 inches at 150 dpi
    assert Path(config.run_dir, "curves.svg").read_text().lstrip().startswith("<?xml")


def test_each_panel_shows_its_records_against_the_epochs(curved_run):
    config, records, _ = curved_run
    fig = curves_figure(records, config)
    panels = {ax.get_title(): ax for ax in fig.axes}
    assert list(panels) == ["Losses", "SEM term", "Accuracy", "Learning rate"]
    assert [ax.get_xlabel() for ax in fig.axes] == ["", "", "epoch", "epoch"]
    expected = {
        "Losses": {"training loss (CE + γ·SEM, mixed)": "train_loss", "training CE (mixed)": "train_ce",
                   "test CE (clean)": "test_loss", "validation CE (clean)": "val_loss"},
        "SEM term": {"SEM term (mixed vs equivariant features)": "train_sem"},
        "Accuracy": {"training (mixed, λ-weighted)": "train_acc", "test": "test_acc", "validation": "val_acc"},
        "Learning rate": {"learning rate (last step of the epoch)": "lr"},
    }  # fmt: skip
    for title, series in expected.items():
        lines = {line.get_label(): line for line in panels[title].get_lines()}
        assert set(lines) == set(series)
        for label, key in series.items():
            assert list(lines[label].get_xdata()) == [1, 2, 3]
            assert list(lines[label].get_ydata()) == [r[key] for r in records]
        shading = [p for p in panels[title].patches if p.get_label() == "early stop (no mixing)"]
        assert len(shading) == 1 and shading[0].get_x() == 2.5  # epoch 3 trained without mixing
    assert fig.get_suptitle() == "demo: mixup + SEM (γ = 1), c10-bundled, prn18 — epoch 3 of 3"


def test_the_curves_are_redrawn_after_an_epoch_within_a_twentieth_of_the_time(monkeypatch, tiny_config):
    clock, drawn = [0.0], []

    def draw(history, config, run_dir):
        drawn.append(history[-1]["epoch"])
        clock[0] += 1.0  # every drawing takes 1 s

    monkeypatch.setattr(curves.time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(curves, "draw_learning_curves", draw)
    plots = LearningCurves(tiny_config.replace(epochs=12), Path(tiny_config.out))
    for epoch in range(1, 13):
        clock[0] += 6.0  # 6-second epochs: the budget allows a drawing every 20 s of training
        plots.after_epoch([{"epoch": epoch}])
    assert drawn == [1, 5, 9, 12]  # the first, then every 4th epoch (24 s >= 20 x 1 s), and the last
