"""The cpu backend: image files decoded with Pillow (the array path is covered in test_factory)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from sem_fast.data import DatasetFormatError, load_dataset, loader_from_dataset
from tests.utils import epoch_batches, sample_multiset, write_image_folder


def file_loader(root, batch_size=4, **kwargs):
    kwargs.setdefault("shuffle", True)
    return loader_from_dataset(load_dataset("imagefolder", root, "train"), batch_size, "cpu", "cpu", **kwargs)


@pytest.mark.parametrize("batch_size,num_shards", [(4, 1), (1, 1), (5, 2), (13, 1)])
def test_png_epoch_yields_every_image_once_with_its_class(png_tree, batch_size, num_shards):
    root, expected = png_tree
    seen = Counter()
    for shard_id in range(num_shards):
        batches = epoch_batches(file_loader(root, batch_size, seed=2, shard_id=shard_id, num_shards=num_shards))
        assert all(x.shape[1:] == (12, 10, 3) and x.dtype == torch.uint8 for x, _ in batches)
        seen += sample_multiset(torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches]))
    assert seen == expected


def test_augment_is_fixed_by_seed_and_epoch_whatever_the_thread_count(png_tree):
    root, _ = png_tree
    one, three = file_loader(root, augment=True, image_size=8, num_threads=1), file_loader(
        root, augment=True, image_size=8, num_threads=3)
    epoch0 = epoch_batches(one)
    assert all(x.shape[1:] == (8, 8, 3) for x, _ in epoch0)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(epoch0, epoch_batches(three), strict=True))
    unshuffled = file_loader(root, shuffle=False, augment=True, image_size=8)
    first, second = epoch_batches(unshuffled), epoch_batches(unshuffled)
    assert not torch.equal(first[0][0], second[0][0])  # same images, new crops


def test_mixed_sizes_need_image_size(tmp_path):
    write_image_folder(tmp_path / "train", {"a": [np.zeros((6, 6, 3), np.uint8)], "b": [np.zeros((5, 6, 3), np.uint8)]})
    with pytest.raises(DatasetFormatError, match=r"b/0.png: image is 6x5 but .*a/0.png is 6x6; pass image_size"):
        epoch_batches(file_loader(tmp_path, 2, shuffle=False))
    batches = epoch_batches(file_loader(tmp_path, 2, shuffle=False, image_size=7))
    assert batches[0][0].shape == (2, 7, 7, 3)


def test_truncated_file_stops_the_epoch_naming_it(tmp_path):
    rng = np.random.default_rng(0)
    write_image_folder(tmp_path / "train", {"a": [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)] * 3}, ext=".jpg")
    data = (tmp_path / "train" / "a" / "1.jpg").read_bytes()
    (tmp_path / "train" / "a" / "1.jpg").write_bytes(data[:100])
    with pytest.raises(DatasetFormatError, match="1.jpg: cannot decode image"):
        epoch_batches(file_loader(tmp_path, 1, shuffle=False))

