"""SVHN (cropped digits, used as out-of-distribution data) from its ``.mat`` files.

``root/{train,test,extra}_32x32.mat`` as published (and as torchvision stores them): ``X`` uint8
``(32, 32, 3, N)`` and ``y`` ``(N, 1)`` with digit 0 labelled 10. Read with the numpy-only MAT v5
reader of `sem_fast.data.matlab` (no scipy).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sem_fast.data.arrays import check_images, check_labels
from sem_fast.data.datasets import ArrayDataset
from sem_fast.data.errors import DatasetFormatError, DatasetNotFoundError
from sem_fast.data.matlab import load_mat

SVHN_SPLITS = ("train", "test", "extra")
SVHN_ZERO_LABEL = 10  # SVHN labels digit 0 as class 10; we map it to 0 as torchvision does
SVHN_SIDE = (32, 32)  # the published *_32x32.mat files


def read_svhn(root: str | Path, split: str) -> ArrayDataset:
    """SVHN ``split`` as uint8 ``(N, H, W, 3)`` images and int64 labels 0-9 (digit value)."""
    if split not in SVHN_SPLITS:
        raise ValueError(f"split must be one of {SVHN_SPLITS} for svhn, got {split!r}")
    path = Path(root) / f"{split}_32x32.mat"
    if not path.is_file():
        raise DatasetNotFoundError("svhn", root, [path.name])
    arrays = load_mat(path, names=("X", "y"))
    x = arrays["X"]
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 4:
        raise DatasetFormatError(path, f"X must be uint8 (32, 32, 3, N) images, got {x.dtype} {x.shape}")
    images = check_images(np.ascontiguousarray(x.transpose(3, 0, 1, 2)), str(path), "X (as N, H, W, C)", side=SVHN_SIDE)
    labels = check_labels(arrays["y"], str(path), "y", count=images.shape[0], num_classes=10, first=1, floats=True)
    labels[labels == SVHN_ZERO_LABEL] = 0
    return ArrayDataset(f"svhn-{split}", torch.from_numpy(images), torch.from_numpy(labels), 10)
