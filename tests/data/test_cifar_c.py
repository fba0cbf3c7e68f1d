"""CIFAR-10-C / CIFAR-100-C reader on tiny folders written here in the published layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sem_fast.data import DatasetFormatError, DatasetNotFoundError, cifar_c_corruptions, read_cifar_c

PER_SEVERITY = 3  # images per severity (published: 10,000)


def write_cifar_c(folder: Path, corruptions: tuple[str, ...]) -> np.ndarray:
    """``folder/<corruption>.npy`` (5 severities of `PER_SEVERITY` images stacked) and
    ``labels.npy``, label ``k`` for the ``k``-th image of each severity; returns the images."""
    folder.mkdir(parents=True)
    images = np.random.default_rng(0).integers(0, 256, (5 * PER_SEVERITY, 32, 32, 3), dtype=np.uint8)
    for name in corruptions:
        np.save(folder / f"{name}.npy", images)
    np.save(folder / "labels.npy", np.tile(np.arange(PER_SEVERITY), 5))
    return images


def test_each_severity_is_its_own_slice_of_the_stacked_file(tmp_path):
    images = write_cifar_c(tmp_path / "CIFAR-10-C", ("contrast",))
    for severity in range(1, 6):
        data = read_cifar_c(tmp_path / "CIFAR-10-C", "contrast", severity, 10)
        part = slice((severity - 1) * PER_SEVERITY, severity * PER_SEVERITY)
        assert torch.equal(data.images, torch.from_numpy(images[part]))
        assert data.labels.tolist() == list(range(PER_SEVERITY)) and data.name == f"CIFAR-10-C-contrast-{severity}"


def test_corruptions_found_are_the_benchmark_ones_in_its_order(tmp_path):
    write_cifar_c(tmp_path / "c", ("contrast", "speckle_noise", "gaussian_noise"))  # speckle: one of the 4 extras
    assert cifar_c_corruptions(tmp_path / "c") == ("gaussian_noise", "contrast")
    with pytest.raises(DatasetNotFoundError, match="labels.npy"):
        cifar_c_corruptions(tmp_path)


def test_bad_severity_missing_or_malformed_files_raise_naming_them(tmp_path):
    folder = tmp_path / "c"
    write_cifar_c(folder, ("fog",))
    with pytest.raises(ValueError, match="severity must be in 1..5"):
        read_cifar_c(folder, "fog", 6, 10)
    with pytest.raises(DatasetNotFoundError, match="snow.npy"):
        read_cifar_c(folder, "snow", 1, 10)
    np.save(folder / "frost.npy", np.zeros((7, 32, 32, 3), np.uint8))  # not 5 severities
    with pytest.raises(DatasetFormatError, match="the 5 severities stacked"):
        read_cifar_c(folder, "frost", 1, 10)
    (folder / "fog.npy").write_bytes((folder / "fog.npy").read_bytes()[:500])
    with pytest.raises(DatasetFormatError, match=r"fog.npy \(images\): the header declares .* but the file has 500 bytes"):
        read_cifar_c(folder, "fog", 1, 10)
