"""The dali backend. CPU pipelines run here when DALI is installed; the GPU pipelines (``.gpu()``
arrays, nvJPEG ``mixed`` decoding) only where CUDA exists (marked ``cuda``). The array pipeline's
epoch contract is in test_factory."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from sem_fast.data import DatasetFormatError, dali_available, load_dataset, loader_from_dataset
from sem_fast.data.dali import _import_dali
from sem_fast.data.image_folder import decode_image
from tests.utils import epoch_batches, sample_multiset, write_image_folder

needs_dali = pytest.mark.skipif(not dali_available(), reason="NVIDIA DALI is not installed")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
# JPEG: DALI (nvImageCodec) and Pillow both decode with libjpeg-turbo on the CPU; 0 difference was
# measured with DALI 2.4.0 and Pillow 13. Other IDCTs (nvJPEG) may round differently: allow 2 levels.
JPEG_ATOL = 2


def files(root, batch_size=4, device="cpu", backend="dali", **kwargs):
    kwargs.setdefault("shuffle", True)
    return loader_from_dataset(load_dataset("imagefolder", root, "train"), batch_size, device, backend, **kwargs)


@needs_dali
@pytest.mark.parametrize("batch_size,shard_id,num_shards,drop_last", [(4, 0, 1, False), (3, 1, 2, False),
                                                                      (2, 0, 2, True), (13, 0, 1, False)])
def test_file_pipeline_yields_the_cpu_backends_batches(png_tree, batch_size, shard_id, num_shards, drop_last):
    root, _ = png_tree
    policy = dict(seed=4, shard_id=shard_id, num_shards=num_shards, drop_last=drop_last)
    dali = epoch_batches(files(root, batch_size, **policy))
    for (x, y), (x2, y2) in zip(dali, epoch_batches(files(root, batch_size, backend="cpu", **policy)), strict=True):
        assert torch.equal(x, x2) and torch.equal(y, y2)


@needs_dali
def test_file_pipeline_covers_the_tree_each_epoch(png_tree):
    root, expected = png_tree
    loader = files(root, 5)
    for _ in range(2):
        batches = epoch_batches(loader)
        assert sample_multiset(torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])) == expected


@needs_dali
def test_jpeg_decodes_within_tolerance_of_pillow(tmp_path):
    rng = np.random.default_rng(0)
    gradient = np.tile(np.linspace(0, 255, 23, dtype=np.uint8)[None, :, None], (17, 1, 3))
    write_image_folder(tmp_path / "train", {"a": [rng.integers(0, 256, (17, 23, 3), dtype=np.uint8), gradient]},
                       ext=".jpg")
    data = load_dataset("imagefolder", tmp_path, "train")
    (x, _), = epoch_batches(loader_from_dataset(data, 2, "cpu", "dali", shuffle=False))
    reference = torch.from_numpy(np.stack([decode_image(f, None) for f in data.files]))
    assert (x.int() - reference.int()).abs().max() <= JPEG_ATOL


@needs_dali
def test_augment_crops_to_image_size_fixed_by_seed_and_new_each_epoch(png_tree):
    root, _ = png_tree
    first, twin = files(root, augment=True, image_size=8, seed=1), files(root, augment=True, image_size=8, seed=1)
    epoch0 = epoch_batches(first)
    assert all(x.shape[1:] == (8, 8, 3) for x, _ in epoch0)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(epoch0, epoch_batches(twin), strict=True))
    unshuffled = files(root, shuffle=False, augment=True, image_size=8)
    assert not torch.equal(epoch_batches(unshuffled)[0][0], epoch_batches(unshuffled)[0][0])


@needs_dali
def test_mixed_sizes_need_image_size(tmp_path):
    write_image_folder(tmp_path / "train", {"a": [np.zeros((6, 6, 3), np.uint8)], "b": [np.zeros((5, 6, 3), np.uint8)]})
    with pytest.raises(ValueError, match="differ in size .* pass image_size"):
        epoch_batches(files(tmp_path, 2, shuffle=False))
    assert epoch_batches(files(tmp_path, 2, shuffle=False, image_size=7))[0][0].shape == (2, 7, 7, 3)


@needs_dali
def test_undecodable_file_raises_listing_the_candidate_files(tmp_path):
    write_image_folder(tmp_path / "train", {"a": [np.zeros((8, 8, 3), np.uint8)] * 3})
    path = tmp_path / "train" / "a" / "2.png"
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(DatasetFormatError, match="DALI failed on a batch from one of these files .*2.png"):
        epoch_batches(files(tmp_path, 1, shuffle=False))


@needs_dali
def test_bad_prefetch_raises():
    with pytest.raises(ValueError, match="prefetch must be a positive int"):
        loader_from_dataset(load_dataset("cifar10-bundled", None, "test"), 8, "cpu", "dali", shuffle=False, prefetch=0)


def test_missing_dali_raises_an_import_error_naming_the_wheel(monkeypatch):
    monkeypatch.setitem(sys.modules, "nvidia.dali", None)
    with pytest.raises(ImportError, match=r"pip install \"sem_fast\[dali\]\" \(nvidia-dali-cuda130, CUDA 13\)"):
        _import_dali()


@needs_dali
@pytest.mark.cuda
@needs_cuda
def test_gpu_array_pipeline_matches_the_cpu_backend_on_cuda():
    data = load_dataset("cifar10-bundled", None, "test")
    policy = dict(shuffle=True, seed=2, shard_id=1, num_shards=2)
    dali = epoch_batches(loader_from_dataset(data, 100, "cuda", "dali", **policy))
    for (x, y), (x2, y2) in zip(dali, epoch_batches(loader_from_dataset(data, 100, "cuda", "cpu", **policy)),
                                strict=True):
        assert torch.equal(x, x2) and torch.equal(y, y2)


@needs_dali
@pytest.mark.cuda
@needs_cuda
def test_mixed_decoder_on_gpu_decodes_png_exactly_and_augments(png_tree):
    root, expected = png_tree
    batches = epoch_batches(files(root, 4, device="cuda"))
    assert sample_multiset(torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])) == expected
    augmented = epoch_batches(files(root, 4, device="cuda", augment=True, image_size=8))
    assert all(x.shape[1:] == (8, 8, 3) for x, _ in augmented)
