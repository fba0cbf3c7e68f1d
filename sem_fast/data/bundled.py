"""The CIFAR-10 subset shipped inside the package (3,000 train / 1,000 test images).

See ``bundled/PROVENANCE.md``: real CIFAR-10 images, JPEG-decoded copies, correct labels.
"""

from __future__ import annotations

import lzma
from pathlib import Path
from typing import Literal

import torch

from sem_fast.data.arrays import check_images, check_labels, read_npz

BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip


def load_bundled(split: Literal["train", "test"]) -> tuple[torch.Tensor, torch.Tensor]:
    """The bundled subset ``split`` as ``(images (N, 32, 32, 3) uint8, labels (N,) int64)`` on CPU.

    ``N`` is 3,000 for ``'train'`` (300 per class) and 1,000 for ``'test'``.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    path = BUNDLED_DIR / f"cifar10_{split}_subset.npz.xz"
    if not path.is_file():
        raise FileNotFoundError(f"the bundled CIFAR-10 subset is missing: expected {path}")
    arrays = read_npz(lzma.decompress(path.read_bytes()), ("x", "y"), name=path)
    images = check_images(arrays["x"], str(path), "x", side=(32, 32))
    labels = check_labels(arrays["y"], str(path), "y", count=images.shape[0], num_classes=len(CIFAR10_CLASSES))
    return torch.from_numpy(images), torch.from_numpy(labels)
