"""SVHN from its .mat layout: files written here byte by byte in the published layout
(`tests.utils.mat_v5`; the MAT reader itself is checked against scipy-written files in test_matlab.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from sem_fast.data import DatasetFormatError, DatasetNotFoundError, make_loader
from sem_fast.data.svhn import read_svhn
from tests.utils import mat_v5, write_svhn_mat

FIXTURES = Path(__file__).parent / "fixtures"
LABELS = [1, 0, 3, 0, 5, 9, 2]


def _images(n: int = len(LABELS)) -> np.ndarray:
    """``(n, 32, 32, 3)`` uint8 with image ``k``'s first pixel ``3k``, so each image is identifiable."""
    images = np.random.default_rng(0).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    images[:, 0, 0, 0] = 3 * np.arange(n)
    return images


@pytest.mark.parametrize("compressed", [True, False])
def test_svhn_images_are_nhwc_and_digit_zero_is_label_zero(compressed, tmp_path):
    write_svhn_mat(tmp_path / "test_32x32.mat", _images(), LABELS, compressed=compressed)
    data = read_svhn(tmp_path, "test")
    assert torch.equal(data.images, torch.from_numpy(_images()))
    assert data.labels.tolist() == LABELS


def test_svhn_through_the_factory_yields_each_image_once(tmp_path):
    write_svhn_mat(tmp_path / "extra_32x32.mat", _images(), LABELS)
    batches = list(make_loader("svhn", tmp_path, "extra", 3, "cpu", "cpu", shuffle=True, seed=0))
    assert [len(y) for _, y in batches] == [3, 3, 1]
    images = torch.cat([x for x, _ in batches])
    order = images[:, 0, 0, 0].long() // 3  # image k has first pixel 3k
    assert sorted(order.tolist()) == list(range(7))
    assert torch.cat([y for _, y in batches]).tolist() == [LABELS[int(i)] for i in order]


def test_missing_svhn_file_is_named(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="train_32x32.mat"):
        read_svhn(tmp_path, "train")


def test_svhn_file_without_images_raises(tmp_path):
    shutil.copy(FIXTURES / "complex.mat", tmp_path / "test_32x32.mat")
    with pytest.raises(DatasetFormatError):
        read_svhn(tmp_path, "test")


@pytest.mark.parametrize(
    "variables,message",
    [
        ({"X": _images().transpose(1, 2, 3, 0), "y": np.zeros((7, 1))}, r"y must lie in \[1, 10\] \(10 classes\), found 0"),
        ({"X": _images().transpose(1, 2, 3, 0), "y": np.full((7, 1), 2.5)}, "y must be 7 integer labels"),
        ({"X": _images().transpose(1, 2, 3, 0), "y": np.ones((6, 1))}, "y must be 7 integer labels"),
        ({"X": _images()[:, :16].transpose(1, 2, 3, 0), "y": np.ones((7, 1))}, r"X \(as N, H, W, C\) must be uint8 \(N, 32, 32, 3\)"),
        ({"X": _images().transpose(0, 3, 1, 2), "y": np.ones((7, 1))}, "X .* must have 3 channels"),
        ({"X": _images().astype(np.float64).transpose(1, 2, 3, 0), "y": np.ones((7, 1))}, "X must be uint8"),
    ],
    ids=["label-0", "fractional-label", "too-few-labels", "16-rows", "channels-first", "float-images"],
)  # fmt: skip
def test_svhn_file_unlike_the_published_layout_raises_naming_the_file_and_field(variables, message, tmp_path):
    (tmp_path / "test_32x32.mat").write_bytes(mat_v5(variables, compressed=False))
    with pytest.raises(DatasetFormatError, match=rf"test_32x32.mat: {message}"):
        read_svhn(tmp_path, "test")
