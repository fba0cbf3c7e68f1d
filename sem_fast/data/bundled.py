"""The CIFAR-10 subset shipped inside the package (3,000 train / 1,000 test images).

See ``bundled/PROVENANCE.md``: real CIFAR-10 images, JPEG-decoded copies, correct labels.
"""

from __future__ import annotations

import io
import lzma
from pathlib import Path
from typing import Literal

import numpy as np
import torch

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
    arrays = np.load(io.BytesIO(lzma.decompress(path.read_bytes())))
    return torch.from_numpy(arrays["x"]), torch.from_numpy(arrays["y"].astype(np.int64))
