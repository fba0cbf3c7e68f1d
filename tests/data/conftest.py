"""Fixtures of the data tests: small image-file trees written in the formats the readers expect."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.utils import sample_multiset, write_image_folder

TREE_COUNTS = {"cat": 4, "ant": 5, "bee": 4}  # 13 images: an odd count, classes out of sorted order
TREE_SIZE = (12, 10)  # (H, W): not square, so a swapped height/width shows


@pytest.fixture(scope="module")
def png_tree(tmp_path_factory) -> tuple[Path, Counter]:
    """``root/train/<class>/<k>.png``: distinct random RGB images; returns ``(root, multiset of
    (image, label))`` with labels indexing the sorted class names (ant 0, bee 1, cat 2)."""
    root = tmp_path_factory.mktemp("png_tree")
    rng = np.random.default_rng(0)
    images = {name: [rng.integers(0, 256, (*TREE_SIZE, 3), dtype=np.uint8) for _ in range(n)]
              for name, n in TREE_COUNTS.items()}
    write_image_folder(root / "train", images)
    classes = sorted(TREE_COUNTS)
    arrays = [a for name in classes for a in images[name]]
    labels = [classes.index(name) for name in classes for _ in images[name]]
    return root, sample_multiset(torch.from_numpy(np.stack(arrays)), torch.tensor(labels))
