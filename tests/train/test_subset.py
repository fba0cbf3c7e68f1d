"""--train-subset and --val-split: class-balanced parts of the training split drawn by a seed,
recorded in the run's files; the validation split is evaluated with the test set every time."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch

from sem_fast.data import factory
from sem_fast.data.datasets import ArrayDataset
from sem_fast.train import train
from sem_fast.train.train_sets import subset_and_validation
from tests.utils import sample_multiset


@pytest.fixture(scope="module")
def bundled_train() -> ArrayDataset:
    images, labels = factory.load_bundled("train")  # 300 images of each of the 10 classes
    return ArrayDataset("bundled-train", images, labels, 10)


def _per_class(dataset: ArrayDataset) -> list[int]:
    return torch.bincount(dataset.labels, minlength=10).tolist()


def test_a_subset_of_n_images_takes_n_over_k_of_each_class_and_the_remainder_by_seed(bundled_train):
    assert _per_class(subset_and_validation(bundled_train, 100, 0.0, seed=0)[0]) == [10] * 10
    counts = _per_class(subset_and_validation(bundled_train, 103, 0.0, seed=0)[0])
    assert sorted(counts) == [10] * 7 + [11] * 3
    others = {tuple(_per_class(subset_and_validation(bundled_train, 103, 0.0, seed=s)[0])) for s in range(1, 6)}
    assert len(others | {tuple(counts)}) > 1  # which classes get the 3 extra images is drawn


def test_a_fractional_subset_takes_that_fraction_of_every_class(bundled_train):
    assert _per_class(subset_and_validation(bundled_train, 0.1, 0.0, seed=0)[0]) == [30] * 10


def test_the_seed_draws_the_images_and_a_smaller_subset_lies_in_a_larger_one(bundled_train):
    def images(n: int, seed: int) -> Counter:
        part = subset_and_validation(bundled_train, n, 0.0, seed=seed)[0]
        return sample_multiset(part.images, part.labels)

    assert images(100, 0) == images(100, 0) and images(100, 0) != images(100, 1)
    assert not images(50, 0) - images(100, 0)  # every image of the 50 is among the 100


def test_the_validation_split_is_class_balanced_and_disjoint_from_training(bundled_train):
    part, val = subset_and_validation(bundled_train, 200, 0.1, seed=3)
    assert _per_class(part) == [18] * 10 and _per_class(val) == [2] * 10
    assert not sample_multiset(part.images, part.labels) & sample_multiset(val.images, val.labels)
    whole, whole_val = subset_and_validation(bundled_train, 0, 0.5, seed=0)
    assert len(whole) == len(whole_val) == 1500


def test_a_subset_larger_than_a_class_allows_is_refused_naming_the_class(bundled_train):
    with pytest.raises(ValueError, match=r"--train-subset\) 4000 needs 400 images of class \d, bundled-train has 300; "
                                         r"choose at most 3000"):  # fmt: skip
        subset_and_validation(bundled_train, 4000, 0.0, seed=0)


def test_a_run_on_a_subset_with_validation_logs_both_and_records_them(tiny_config):
    config = tiny_config.replace(train_subset=200, val_split=0.1, data_seed=7, epochs=2, eval_every=1, max_steps_per_epoch=0)
    summary = train(config)
    assert summary["images"] == {"train": 180, "val": 20, "test": 1000}  # the test set is always whole
    assert summary["steps"] == 2 * (180 // 16)  # full batches of the 180 training images
    records = [json.loads(line) for line in Path(config.run_dir, "metrics.jsonl").read_text().splitlines()]
    assert all(r["val_acc"] is not None and r["val_loss"] > 0 and r["test_acc"] is not None for r in records)
    assert summary["final_val_acc"] == records[-1]["val_acc"] and 0 <= summary["final_val_acc"] <= 100
    assert summary["final_val_acc"] % 5 == 0  # k of the 20 validation images, 5 % each
    stored = json.loads(Path(config.run_dir, "config.json").read_text())
    assert (stored["train_subset"], stored["val_split"], stored["data_seed"]) == (200, 0.1, 7)
