"""The resident backend: data held on the device, file datasets decoded once, no host sync per step."""

from __future__ import annotations

import pytest
import torch

from sem_fast.data import load_dataset, loader_from_dataset, make_loader
from tests.utils import epoch_batches, sample_multiset

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_resident_loader_holds_the_whole_dataset_on_its_device():
    loader = make_loader("cifar10-bundled", None, "test", 100, "cpu", "resident")
    assert loader.images.shape == (1000, 32, 32, 3) and loader.images.device == loader.device
    assert all(x.device == loader.device and y.device == loader.device for x, y in loader)


def test_file_dataset_is_decoded_once_into_the_same_batches_as_the_cpu_loader(png_tree):
    root, _ = png_tree
    files = load_dataset("imagefolder", root, "train")
    resident = epoch_batches(loader_from_dataset(files, 5, "cpu", "resident", shuffle=True, seed=3))
    host = epoch_batches(loader_from_dataset(files, 5, "cpu", "cpu", shuffle=True, seed=3))
    for (x, y), (x2, y2) in zip(resident, host, strict=True):
        assert torch.equal(x, x2) and torch.equal(y, y2)


def test_resident_refuses_augment_on_files(png_tree):
    with pytest.raises(ValueError, match="backend='resident' holds decoded images and does not augment"):
        make_loader("imagefolder", png_tree[0], "train", 4, "cpu", "resident", augment=True, image_size=8)


@pytest.mark.cuda
@needs_cuda
def test_resident_epoch_on_cuda_never_syncs_with_the_host():
    loader = make_loader("cifar10-bundled", None, "train", 128, "cuda", "resident", shuffle=True)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        count = sum(1 for _ in loader)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert count == len(loader)


@pytest.mark.cuda
@needs_cuda
def test_resident_on_cuda_keeps_the_epoch_contract():
    data = load_dataset("cifar10-bundled", None, "test")
    batches = epoch_batches(loader_from_dataset(data, 96, "cuda", "resident", shuffle=True, seed=1))
    images, labels = torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])
    assert sample_multiset(images, labels) == sample_multiset(data.images, data.labels)
