"""Readers for the robustness test sets that only evaluation uses: CIFAR-10-C / CIFAR-100-C and
CIFAR-10.2, in their published formats (CIFAR-10.1, SVHN and image folders are read by
`sem_fast.data`). Each returns a `sem_fast.data.ArrayDataset`.

- CIFAR-10-C / CIFAR-100-C (Hendrycks & Dietterich 2019): a folder of ``<corruption>.npy``,
  uint8 ``(5 * N, 32, 32, 3)`` with severities 1..5 stacked in order (N = 10,000), and
  ``labels.npy`` ``(5 * N,)``.
- CIFAR-10.2 (Lu et al. 2020): ``cifar102_test.npz`` with ``images`` uint8 ``(N, 32, 32, 3)``
  and ``labels`` ``(N,)`` (N = 2,000).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sem_fast.data import ArrayDataset, DatasetFormatError, DatasetNotFoundError

#: The 15 corruptions of the benchmark (the published folders also hold 4 extra ones, which
#: the paper's average leaves out).
CIFAR_C_CORRUPTIONS = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)  # fmt: skip
CIFAR_C_SEVERITIES = 5
CIFAR102_FILE = "cifar102_test.npz"


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
    images = _load_npy(folder / f"{corruption}.npy")
    labels = _load_npy(folder / "labels.npy")
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[0] % CIFAR_C_SEVERITIES or images.shape[3] != 3:
        raise DatasetFormatError(folder / f"{corruption}.npy", f"expected uint8 (5 * N, H, W, 3) with the 5 severities "
                                 f"stacked, got {images.dtype} {images.shape}")  # fmt: skip
    if labels.shape != (images.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise DatasetFormatError(folder / "labels.npy", f"expected {images.shape[0]} integer labels (one per image of "
                                 f"{corruption}.npy), got {labels.dtype} {labels.shape}")  # fmt: skip
    n = images.shape[0] // CIFAR_C_SEVERITIES
    part = slice((severity - 1) * n, severity * n)
    return ArrayDataset(
        f"{folder.name}-{corruption}-{severity}",
        torch.from_numpy(np.array(images[part])),  # a copy: the memory map is read-only
        torch.from_numpy(labels[part].astype(np.int64)),
        num_classes,
    )


def read_cifar10_2(root: str | Path) -> ArrayDataset:
    """CIFAR-10.2's test set from ``root/cifar102_test.npz``."""
    path = Path(root) / CIFAR102_FILE
    if not path.is_file():
        raise DatasetNotFoundError("cifar10.2", root, [CIFAR102_FILE])
    try:
        with np.load(path, allow_pickle=False) as archive:
            images, labels = archive["images"], archive["labels"]
    except (KeyError, ValueError, OSError, EOFError) as err:
        raise DatasetFormatError(path, f"expected an .npz with arrays 'images' and 'labels': {err}") from err
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
        raise DatasetFormatError(path, f"'images' must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
    if labels.shape != (images.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise DatasetFormatError(path, f"'labels' must hold {images.shape[0]} integers, got {labels.dtype} {labels.shape}")
    return ArrayDataset("cifar10.2-test", torch.from_numpy(np.ascontiguousarray(images)),
                        torch.from_numpy(labels.astype(np.int64)), 10)  # fmt: skip


def _load_npy(path: Path) -> np.ndarray:
    """Memory-map ``path`` (only the slice used is read)."""
    if not path.is_file():
        raise DatasetNotFoundError("cifar-c", path.parent, [path.name])
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise DatasetFormatError(path, f"not a readable .npy file (truncated or corrupt?): {err}") from err
