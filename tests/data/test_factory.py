"""make_loader: the contract every array backend keeps, dataset names, backend choice, bad input.

Contract (each backend that runs here, on the bundled CIFAR-10 test subset, N = 1000): every
sample exactly once per epoch with its own label, seeds fix the order, shards are disjoint and
cover the set, and the last-batch policy holds.
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from sem_fast.data import (
    DATASETS, DatasetNotFoundError, dali_available, load_bundled, load_dataset, loader_from_dataset, make_loader,
)  # fmt: skip
from tests.utils import epoch_batches, sample_multiset, shared_data_dir

needs_dali = pytest.mark.skipif(not dali_available(), reason="NVIDIA DALI is not installed")
BACKENDS = ["resident", "cpu", pytest.param("dali", marks=needs_dali)]
N = 1000  # images in the bundled test subset


BUNDLED_TEST = load_dataset("cifar10-bundled", None, "test")  # read once: every loader below shares it


@pytest.fixture(scope="module")
def dataset_multiset() -> Counter:
    return sample_multiset(*load_bundled("test"))


def loader(backend: str, batch_size: int = 128, shuffle: bool = False, **kwargs):
    return loader_from_dataset(BUNDLED_TEST, batch_size, "cpu", backend, shuffle=shuffle, **kwargs)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batch_size", [128, 1, 999])
def test_epoch_yields_every_sample_once_with_its_label(backend, batch_size, dataset_multiset):
    batches = epoch_batches(loader(backend, batch_size, shuffle=True, seed=3))
    assert len(batches) == len(loader(backend, batch_size)) == -(-N // batch_size)
    for x, y in batches:
        assert x.dtype == torch.uint8 and x.shape[1:] == (32, 32, 3) and x.is_contiguous()
        assert y.dtype == torch.int64 and y.shape == (x.shape[0],)
    short = [N % batch_size] if N % batch_size else []
    assert [len(y) for _, y in batches] == [batch_size] * (N // batch_size) + short
    assert sample_multiset(torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])) == dataset_multiset


@pytest.mark.parametrize("backend", BACKENDS)
def test_unshuffled_epoch_is_the_dataset_in_order(backend):
    images, labels = load_bundled("test")
    batches = epoch_batches(loader(backend, 300, shuffle=False))
    assert torch.equal(torch.cat([x for x, _ in batches]), images)
    assert torch.equal(torch.cat([y for _, y in batches]), labels)


@pytest.mark.parametrize("backend", BACKENDS)
def test_seed_fixes_the_order_and_each_epoch_reshuffles(backend):
    first, second = loader(backend, seed=11, shuffle=True), loader(backend, seed=11, shuffle=True)
    epoch0, epoch1 = epoch_batches(first), epoch_batches(first)
    assert all(torch.equal(a[1], b[1]) and torch.equal(a[0], b[0]) for a, b in zip(epoch0, epoch_batches(second)))
    assert not torch.equal(epoch0[0][1], epoch1[0][1])
    other = epoch_batches(loader(backend, seed=12, shuffle=True))
    assert not torch.equal(epoch0[0][0], other[0][0])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("num_shards", [3, 7])
def test_shards_are_disjoint_and_cover_the_dataset(backend, num_shards, dataset_multiset):
    union, sizes = Counter(), []
    for shard_id in range(num_shards):
        shard = loader(backend, 64, shuffle=True, seed=5, shard_id=shard_id, num_shards=num_shards)
        batches = epoch_batches(shard)
        shard_set = sample_multiset(torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches]))
        assert not (union & shard_set), f"shard {shard_id} repeats samples of earlier shards"
        union += shard_set
        sizes.append(shard.num_samples)
    assert union == dataset_multiset
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_drop_last_gives_equal_full_batches_on_every_shard(backend, dataset_multiset):
    seen = Counter()
    for shard_id in range(3):
        batches = epoch_batches(loader(backend, 100, shuffle=True, seed=2, drop_last=True, shard_id=shard_id,
                                       num_shards=3))
        assert [len(y) for _, y in batches] == [100, 100, 100]
        seen += sample_multiset(torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches]))
    assert sum(seen.values()) == 900 and not (seen - dataset_multiset)


def test_backends_yield_identical_batches_on_cpu_for_one_seed():
    backends = ["resident", "cpu"] + (["dali"] if dali_available() else [])
    runs = {b: epoch_batches(loader(b, 96, shuffle=True, seed=9, shard_id=1, num_shards=2)) for b in backends}
    for backend, batches in runs.items():
        for (x, y), (x_ref, y_ref) in zip(batches, runs["resident"], strict=True):
            assert torch.equal(x, x_ref) and torch.equal(y, y_ref), backend


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_abandoned_epoch_leaves_the_next_epoch_complete(backend, dataset_multiset):
    shuffled = loader(backend, 64, shuffle=True, seed=1)
    for step, _ in enumerate(shuffled):
        if step == 2:
            break
    batches = epoch_batches(shuffled)
    assert shuffled.epoch == 2
    assert sample_multiset(torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])) == dataset_multiset


def test_shuffle_defaults_to_the_training_split_only():
    assert make_loader("cifar10-bundled", None, "train", 64, "cpu").shuffle
    assert not make_loader("cifar10-bundled", None, "test", 64, "cpu").shuffle


def test_auto_backend_on_cpu_picks_the_cpu_path_for_arrays():
    assert make_loader("cifar10-bundled", None, "test", 64, "cpu").backend == "cpu"


@pytest.mark.parametrize(
    "args,kwargs,error,message",
    [
        (("cifar11", None, "test"), {}, ValueError, "unknown dataset 'cifar11'; known: cifar10, cifar100"),
        (("cifar10-bundled", None, "val"), {}, ValueError, r"split must be one of \('train', 'test'\)"),
        (("cifar10-bundled", None, "test"), {"backend": "gpu"}, ValueError, "backend must be one of"),
        (("cifar10", None, "test"), {}, ValueError, "root must be the folder holding cifar10"),
        (("cifar10-bundled", None, "test"), {"augment": True, "image_size": 32}, ValueError,
         "array dataset: the loader neither resizes nor augments it"),
        (("cifar10-bundled", None, "test"), {"augment": True}, ValueError, "augment=True .* needs image_size"),
        (("cifar10-bundled", None, "test"), {"image_size": 0}, ValueError, "image_size must be a positive int"),
        (("cifar10-bundled", None, "test"), {"num_threads": 0}, ValueError, "num_threads must be a positive int"),
    ],
)
def test_bad_arguments_raise_naming_what_was_expected(args, kwargs, error, message):
    with pytest.raises(error, match=message):
        make_loader(*args, 64, "cpu", **kwargs)


def test_loader_from_dataset_rejects_raw_tensors():
    with pytest.raises(TypeError, match="dataset must be an ArrayDataset or FileDataset"):
        loader_from_dataset(BUNDLED_TEST.images, 8, "cpu", shuffle=False)


@pytest.mark.parametrize("name", [n for n in DATASETS if n != "cifar10-bundled"])
def test_every_dataset_names_its_expected_files_when_the_root_is_empty(name, tmp_path):
    split = "val" if name == "tiny-imagenet" else "test"
    with pytest.raises(DatasetNotFoundError, match=f"{name}: dataset files not found under root") as info:
        make_loader(name, tmp_path, split, 8, "cpu", "cpu")
    assert str(tmp_path) in str(info.value)


@pytest.mark.skipif(shared_data_dir() is None, reason="the project's shared data folder is not beside the repo")
def test_shared_cifar10_test_arrays_load_through_the_factory():
    batches = epoch_batches(make_loader("cifar10-npz", shared_data_dir(), "test", 2500, "cpu", "cpu"))
    labels = torch.cat([y for _, y in batches])
    assert len(labels) == 10_000 and torch.equal(labels.bincount(), torch.full((10,), 1000))
    assert labels[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]  # first CIFAR-10 test labels (shared README)


def test_deprecated_backends_name_warns_and_is_loader_backends():
    import sem_fast.data

    with pytest.warns(DeprecationWarning, match=r"use sem_fast\.data\.LOADER_BACKENDS"):
        from sem_fast.data import BACKENDS as old_name
    assert old_name is sem_fast.data.LOADER_BACKENDS == ("auto", "dali", "resident", "cpu")
