"""SVHN from its .mat layout (a toy-size file written by scipy, see fixtures/README.md)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from sem_fast.data import DatasetFormatError, DatasetNotFoundError, make_loader
from sem_fast.data.svhn import read_svhn
from tests.utils import mat_fixture_images

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize("fixture", ["svhn_compressed.mat", "svhn_plain.mat"])
def test_svhn_images_are_nhwc_and_digit_zero_is_label_zero(fixture, tmp_path):
    shutil.copy(FIXTURES / fixture, tmp_path / "test_32x32.mat")
    data = read_svhn(tmp_path, "test")
    assert torch.equal(data.images, torch.from_numpy(mat_fixture_images().transpose(3, 0, 1, 2).copy()))
    assert data.labels.tolist() == [1, 0, 3, 0, 5, 9, 2]


def test_svhn_through_the_factory_yields_each_image_once(tmp_path):
    shutil.copy(FIXTURES / "svhn_compressed.mat", tmp_path / "extra_32x32.mat")
    batches = list(make_loader("svhn", tmp_path, "extra", 3, "cpu", "cpu", shuffle=True, seed=0))
    assert [len(y) for _, y in batches] == [3, 3, 1]
    images = torch.cat([x for x, _ in batches])
    order = images[:, 0, 0, 0].long()  # X[0, 0, 0, n] = 3n identifies image n
    assert sorted(order.tolist()) == [3 * n for n in range(7)]
    assert torch.cat([y for _, y in batches]).tolist() == [[1, 0, 3, 0, 5, 9, 2][int(i) // 3] for i in order]


def test_missing_svhn_file_is_named(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="train_32x32.mat"):
        read_svhn(tmp_path, "train")


def test_svhn_file_without_images_raises(tmp_path):
    shutil.copy(FIXTURES / "complex.mat", tmp_path / "test_32x32.mat")
    with pytest.raises(DatasetFormatError):
        read_svhn(tmp_path, "test")


def test_svhn_labels_outside_one_to_ten_raise(tmp_path, monkeypatch):
    shutil.copy(FIXTURES / "svhn_compressed.mat", tmp_path / "test_32x32.mat")
    arrays = {"X": mat_fixture_images(), "y": np.zeros((7, 1), np.uint8)}
    monkeypatch.setattr("sem_fast.data.svhn.load_mat", lambda path, names: arrays)
    with pytest.raises(DatasetFormatError, match="y must hold labels 1-10, found 0..0"):
        read_svhn(tmp_path, "test")
