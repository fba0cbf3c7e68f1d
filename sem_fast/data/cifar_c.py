"""CIFAR-10-C / CIFAR-100-C (Hendrycks & Dietterich 2019) in their published format, for the
robustness evaluation (`sem_fast.eval`): a folder of ``<corruption>.npy``, uint8
``(5 * N, 32, 32, 3)`` with severities 1..5 stacked in order (N = 10,000), and ``labels.npy``
``(5 * N,)``. `read_cifar_c` returns one corruption and severity as an `ArrayDataset`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sem_fast.data.arrays import check_images, check_labels, read_npy
from sem_fast.data.datasets import ArrayDataset
from sem_fast.data.errors import DatasetFormatError, DatasetNotFoundError

#: The 15 corruptions of the benchmark (the published folders also hold 4 extra ones, which
#: the paper's average leaves out).
CIFAR_C_CORRUPTIONS = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)  # fmt: skip
CIFAR_C_SEVERITIES = 5
CIFAR_C_SIDE = (32, 32)  # the published CIFAR-10-C / CIFAR-100-C images


def cifar_c_corruptions(folder: str | Path) -> tuple[str, ...]:
    """The benchmark corruptions whose ``.npy`` file is in ``folder`` (which must hold ``labels.npy``)."""
    folder = Path(folder)
    if not (folder / "labels.npy").is_file():
        raise DatasetNotFoundError("cifar-c", folder, ["labels.npy", "<corruption>.npy (e.g. gaussian_noise.npy)"])
    return tuple(c for c in CIFAR_C_CORRUPTIONS if (folder / f"{c}.npy").is_file())


def read_cifar_c(folder: str | Path, corruption: str, severity: int, num_classes: int) -> ArrayDataset:
    """The ``severity`` (1..5) slice of ``folder/<corruption>.npy`` with its labels."""
    folder = Path(folder)
    if not 1 <= severity <= CIFAR_C_SEVERITIES:
        raise ValueError(f"severity must be in 1..{CIFAR_C_SEVERITIES}, got {severity}")
    path, labels_path = folder / f"{corruption}.npy", folder / "labels.npy"
    images = check_images(_load_npy(path, "images"), str(path), "images", side=CIFAR_C_SIDE)
    if images.shape[0] % CIFAR_C_SEVERITIES:
        raise DatasetFormatError(path, f"expected uint8 (5 * N, 32, 32, 3) with the 5 severities stacked, got "
                                       f"{images.shape[0]} images")  # fmt: skip
    labels = check_labels(_load_npy(labels_path, "labels"), f"{labels_path} (one label per image of {path.name})",
                          "labels", count=images.shape[0], num_classes=num_classes)  # fmt: skip
    n = images.shape[0] // CIFAR_C_SEVERITIES
    part = slice((severity - 1) * n, severity * n)
    return ArrayDataset(
        f"{folder.name}-{corruption}-{severity}",
        torch.from_numpy(np.array(images[part])),  # a copy: the memory map is read-only
        torch.from_numpy(labels[part]),
        num_classes,
    )


def _load_npy(path: Path, field: str) -> np.ndarray:
    """Memory-map ``path`` (only the slice used is read)."""
    if not path.is_file():
        raise DatasetNotFoundError("cifar-c", path.parent, [path.name])
    return read_npy(path, field, mmap=True)
