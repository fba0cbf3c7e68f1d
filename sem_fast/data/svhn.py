"""SVHN (cropped digits, used as out-of-distribution data) from its ``.mat`` files.

``root/{train,test,extra}_32x32.mat`` as published (and as torchvision stores them): ``X`` uint8
``(32, 32, 3, N)`` and ``y`` ``(N, 1)`` with digit 0 labelled 10. Read with the numpy-only MAT v5
reader of `sem_fast.data.matlab` (no scipy).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sem_fast.data.datasets import ArrayDataset
from sem_fast.data.errors import DatasetFormatError, DatasetNotFoundError
from sem_fast.data.matlab import load_mat

SVHN_SPLITS = ("train", "test", "extra")
SVHN_ZERO_LABEL = 10  # SVHN labels digit 0 as class 10; we map it to 0 as torchvision does


def read_svhn(root: str | Path, split: str) -> ArrayDataset:
    """SVHN ``split`` as uint8 ``(N, H, W, 3)`` images and int64 labels 0-9 (digit value)."""
    if split not in SVHN_SPLITS:
        raise ValueError(f"split must be one of {SVHN_SPLITS} for svhn, got {split!r}")
    path = Path(root) / f"{split}_32x32.mat"
    if not path.is_file():
        raise DatasetNotFoundError("svhn", root, [path.name])
    arrays = load_mat(path, names=("X", "y"))
    x, y = arrays["X"], arrays["y"]
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[2] != 3:
        raise DatasetFormatError(path, f"X must be uint8 (H, W, 3, N), got {x.dtype} {x.shape}")
    if y.size != x.shape[3]:
        raise DatasetFormatError(path, f"y must hold {x.shape[3]} labels (one per image), got shape {y.shape}")
    labels = y.reshape(-1).astype(np.int64)
    if labels.min() < 1 or labels.max() > SVHN_ZERO_LABEL:
        raise DatasetFormatError(path, f"y must hold labels 1-10, found {labels.min()}..{labels.max()}")
    labels[labels == SVHN_ZERO_LABEL] = 0
    images = np.ascontiguousarray(x.transpose(3, 0, 1, 2))
    return ArrayDataset(f"svhn-{split}", torch.from_numpy(images), torch.from_numpy(labels), 10)
