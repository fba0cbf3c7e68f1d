"""The training loop on the bundled subset: metrics files, ES, exact resume, non-finite loss."""

import csv
import json
from pathlib import Path

import pytest
import torch

from sem_fast.train import NonFiniteLossError, TrainConfig, get_recipe, loop, train
from sem_fast.train.checkpoint import load_checkpoint
from sem_fast.train.metrics_log import COLUMNS
from tests.utils import train_interrupted_then_resumed

#: Fields that measure time and so differ between two runs of the same configuration.
TIMING = ("epoch_time_s", "img_per_s", "elapsed_s")


def _numbers(history):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in history]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A 3-epoch tiny run evaluated after epochs 2 and 3: ``(config, summary)``."""
    config = get_recipe("demo").replace(
        out=str(tmp_path_factory.mktemp("finished") / "run"), width=4, epochs=3, es_fraction=0.0, batch_size=16,
        max_steps_per_epoch=3, eval_every=2, progress=False, plots=False,
    )  # fmt: skip
    return config, train(config)


def test_metrics_files_are_written_and_well_formed(finished_run):
    config, summary = finished_run
    run = config.run_dir
    records = [json.loads(line) for line in Path(run, "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3] and [r["step"] for r in records] == [3, 6, 9]
    assert all(tuple(r) == COLUMNS for r in records)
    for r in records:
        assert r["mix"] == "mixup" and r["train_sem"] > 0 and r["train_loss"] == pytest.approx(r["train_ce"] + r["train_sem"])
        assert 0 <= r["train_acc"] <= 100 and r["img_per_s"] > 0 and r["epoch_time_s"] > 0
    assert records[0]["test_acc"] is None and records[0]["test_loss"] is None  # not an evaluation epoch
    assert all(0 <= r["test_acc"] <= 100 and r["test_loss"] > 0 for r in records[1:])
    with open(f"{run}/metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == COLUMNS and len(rows) == 3
    assert rows[0]["test_acc"] == ""
    assert [float(row["test_acc"]) for row in rows[1:]] == [r["test_acc"] for r in records[1:]]
    assert [float(row["train_loss"]) for row in rows] == [r["train_loss"] for r in records]
    saved = json.loads(Path(run, "summary.json").read_text())
    assert saved["final_test_acc"] == records[-1]["test_acc"] == summary["final_test_acc"]
    assert saved["best_test_acc"] == max(r["test_acc"] for r in records[1:]) and saved["steps"] == 9
    stored = TrainConfig.from_dict(json.loads(Path(run, "config.json").read_text()))
    assert stored == config.replace(data_root=str(Path(config.data_root).resolve()))  # absolute: eval from anywhere
    checkpoint = load_checkpoint(run)
    assert checkpoint["epoch"] == 3 and checkpoint["history"] == records


def test_logged_test_accuracy_is_that_of_the_saved_model(finished_run):
    from sem_fast.data import factory  # its load_bundled is cached by conftest
    from sem_fast.train.build import build_model
    from sem_fast.train.inference import predict

    config, summary = finished_run
    model = build_model(config)
    model.load_state_dict(load_checkpoint(config.run_dir)["model"])
    images, labels = factory.load_bundled("test")
    out = predict(model, [(images, labels)], config.sem_config(mixing=False))
    assert 100.0 * int((out.logits.argmax(1) == labels).sum()) / len(labels) == summary["final_test_acc"]


def test_early_stop_turns_mixing_and_sem_off_for_the_last_epochs(tiny_config, monkeypatch):
    mixes = []

    def spy(model, images, labels, cfg, **kwargs):
        mixes.append(cfg.mix)
        return real(model, images, labels, cfg, **kwargs)

    real = loop.fused_sem_step
    monkeypatch.setattr(loop, "fused_sem_step", spy)
    config = tiny_config.replace(epochs=4, es_epochs=2)
    train(config)
    records = load_checkpoint(config.run_dir)["history"]
    assert mixes == ["mixup"] * 6 + ["none"] * 6  # 3 steps per epoch
    assert [r["mix"] for r in records] == ["mixup", "mixup", "none", "none"]
    assert [r["train_sem"] > 0 for r in records] == [True, True, False, False]
    assert all(r["train_loss"] == r["train_ce"] for r in records[2:])


def test_resume_after_an_interruption_ends_exactly_like_an_uninterrupted_run(tiny_config):
    full = tiny_config.replace(out=tiny_config.out + "-full")
    train(full)
    train_interrupted_then_resumed(tiny_config)

    expected, got = load_checkpoint(full.run_dir), load_checkpoint(tiny_config.run_dir)
    assert _numbers(got["history"]) == _numbers(expected["history"])
    for name, tensor in expected["model"].items():
        assert torch.equal(got["model"][name], tensor), name
    assert torch.equal(got["rng"]["generator"], expected["rng"]["generator"])
    lines = Path(tiny_config.run_dir, "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]


def test_resume_refuses_a_changed_configuration(tiny_config):
    train(tiny_config.replace(epochs=1))
    with pytest.raises(ValueError, match=r"lr: 0\.1 -> 0\.2"):
        train(tiny_config.replace(epochs=1, lr=0.2), resume=True)


def test_a_second_run_in_the_same_directory_needs_resume_or_overwrite(tiny_config):
    config = tiny_config.replace(epochs=1)
    train(config)
    with pytest.raises(FileExistsError, match="--resume"):
        train(config)
    assert train(config, overwrite=True)["epochs"] == 1


def test_non_finite_loss_stops_the_run_naming_epoch_batch_and_step(tiny_config, monkeypatch):
    calls = []

    def poisoned(model, images, labels, cfg, **kwargs):
        out = real(model, images, labels, cfg, **kwargs)
        calls.append(1)
        return out._replace(loss=out.loss * float("nan")) if len(calls) == 5 else out

    real = loop.fused_sem_step
    monkeypatch.setattr(loop, "fused_sem_step", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"epoch 2, batch 2 of 3 \(optimizer step 5\): loss=nan") as err:
        train(tiny_config)
    assert (err.value.epoch, err.value.batch, err.value.step) == (2, 2, 5)
    assert load_checkpoint(tiny_config.run_dir)["epoch"] == 1  # the last good epoch


def test_training_on_a_class_subset_has_a_head_of_that_size(tiny_config):
    config = tiny_config.replace(epochs=1, classes=(0, 1, 2, 3, 4, 5))
    summary = train(config)
    assert load_checkpoint(config.run_dir)["model"]["head.weight"].shape[0] == 6
    assert summary["final"]["test_acc"] is not None


def test_a_missing_dataset_names_the_files_expected(tiny_config, tmp_path):
    from sem_fast.data import DatasetNotFoundError

    with pytest.raises(DatasetNotFoundError, match="cifar-10-batches-py"):
        train(tiny_config.replace(dataset="c10", data_root=str(tmp_path / "nothing")))
