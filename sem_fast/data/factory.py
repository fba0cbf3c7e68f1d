"""`make_loader`: one call from a dataset name to an epoch-exact loader on a device.

    loader = make_loader(name, root, split, batch_size, device, backend="auto", shuffle=None, seed=0,
                         drop_last=False, shard_id=0, num_shards=1, image_size=None, augment=False,
                         num_threads=None, prefetch=2)
    # or, to read a split once for several loaders:
    loader = loader_from_dataset(load_dataset(name, root, split), batch_size, device, shuffle=True, ...)
    for epoch in range(epochs):
        for images, labels in loader:   # images (b, H, W, C) uint8, labels (b,) int64, both on device
            ...
    len(loader)                          # batches per epoch of this shard

Datasets (``name``: files under ``root``; splits):

- ``cifar10``, ``cifar100``: torchvision's layout, ``root/cifar-10-batches-py/`` or
  ``root/cifar-100-python/``; train, test.
- ``cifar10-npz``: the xz-compressed arrays of the shared data folder, ``root/cifar10_train.{0,1}.npz.xz``,
  ``root/cifar10_test.npz.xz``; train, test.
- ``cifar10-bundled``: the 3,000/1,000-image CIFAR-10 subset shipped in the package (``root`` is
  ignored, may be None); train, test.
- ``cifar10.1``: ``root/cifar10.1_v6_data.npy`` + ``_labels.npy``; test.
- ``cifar10.2``: ``root/cifar102_test.npz``; test.
- ``svhn``: ``root/{train,test,extra}_32x32.mat``; train, test, extra.
- ``imagefolder``: ``root/<split>/<class>/*.{jpg,jpeg,png}``; any split folder.
- ``tiny-imagenet``: ``root/tiny-imagenet-200/`` as published; train, val.

Backends (``backend``):

- ``resident``: the whole uint8 dataset on ``device``, shuffled there; no host work per step
  (image-file datasets are decoded once, with Pillow, at construction).
- ``dali``: NVIDIA DALI pipelines (GPU when ``device`` is CUDA, CPU otherwise); image files are
  decoded by nvJPEG and, with ``augment``, random-resized-cropped and flipped on the GPU.
- ``cpu``: batches built in host memory (arrays indexed, files decoded with Pillow), then moved
  to ``device``.
- ``auto``: arrays -> ``resident`` on CUDA, ``cpu`` on CPU; image files -> ``dali`` when DALI is
  installed, else ``cpu``.

Policy: ``shuffle`` (None = shuffle the training split only), ``seed`` (epoch ``e``'s order is a
function of ``(seed, e)``), ``drop_last`` and ``shard_id``/``num_shards`` as documented in
`sem_fast.data.epochs` (shards are disjoint and cover the dataset; use ``drop_last=True`` under
DDP so every shard runs the same number of steps). Array datasets are never augmented by the
loader: the fused mix op crops, flips and normalizes the raw uint8 batch on the device.
``image_size``/``augment`` apply to image-file datasets; ``num_threads`` to the ``dali`` and
``cpu`` backends and Pillow decoding; ``prefetch`` to ``dali``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from sem_fast.data.bundled import load_bundled
from sem_fast.data.cifar import read_cifar10_1, read_cifar10_2, read_cifar10_npz, read_cifar_torchvision
from sem_fast.data.cpu import HostArrayLoader, HostFileLoader, check_threads
from sem_fast.data.dali import DEFAULT_PREFETCH, DaliArrayLoader, DaliFileLoader, dali_available
from sem_fast.data.datasets import ArrayDataset, FileDataset
from sem_fast.data.image_folder import check_image_options, decode_file_dataset, list_image_folder, list_tiny_imagenet
from sem_fast.data.loader import Loader, resolve_device
from sem_fast.data.resident import ResidentLoader
from sem_fast.data.svhn import read_svhn

LoaderBackend = Literal["auto", "dali", "resident", "cpu"]
LOADER_BACKENDS = ("auto", "dali", "resident", "cpu")


def _bundled(root: object, split: str) -> ArrayDataset:
    images, labels = load_bundled(split)
    return ArrayDataset(f"cifar10-bundled-{split}", images, labels, 10)


@dataclass(frozen=True)
class DatasetSpec:
    """How to read one named dataset: its reader, its splits (None = any) and which one trains."""

    read: Callable[[Path, str], ArrayDataset | FileDataset]
    splits: tuple[str, ...] | None
    train_split: str = "train"
    needs_root: bool = True


DATASETS: dict[str, DatasetSpec] = {
    "cifar10": DatasetSpec(lambda root, split: read_cifar_torchvision(root, "cifar10", split), ("train", "test")),
    "cifar100": DatasetSpec(lambda root, split: read_cifar_torchvision(root, "cifar100", split), ("train", "test")),
    "cifar10-npz": DatasetSpec(read_cifar10_npz, ("train", "test")),
    "cifar10-bundled": DatasetSpec(_bundled, ("train", "test"), needs_root=False),
    "cifar10.1": DatasetSpec(read_cifar10_1, ("test",)),
    "cifar10.2": DatasetSpec(read_cifar10_2, ("test",)),
    "svhn": DatasetSpec(read_svhn, ("train", "test", "extra")),
    "imagefolder": DatasetSpec(list_image_folder, None),
    "tiny-imagenet": DatasetSpec(list_tiny_imagenet, ("train", "val")),
}


def load_dataset(name: str, root: str | Path | None, split: str) -> ArrayDataset | FileDataset:
    """Read split ``split`` of dataset ``name`` from ``root`` (see the module docstring)."""
    spec = _spec(name)
    if not isinstance(split, str) or not split:
        raise ValueError(f"split must be a non-empty string, got {split!r}")
    if spec.splits is not None and split not in spec.splits:
        raise ValueError(f"split must be one of {spec.splits} for {name}, got {split!r}")
    if spec.needs_root and not isinstance(root, (str, Path)):
        raise ValueError(f"root must be the folder holding {name} (a str or Path), got {root!r}")
    return spec.read(Path(root) if spec.needs_root else root, split)


def _spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[name]


def make_loader(
    name: str,
    root: str | Path | None,
    split: str,
    batch_size: int,
    device: str | torch.device,
    backend: LoaderBackend = "auto",
    *,
    shuffle: bool | None = None,
    seed: int = 0,
    drop_last: bool = False,
    shard_id: int = 0,
    num_shards: int = 1,
    image_size: int | None = None,
    augment: bool = False,
    num_threads: int | None = None,
    prefetch: int = DEFAULT_PREFETCH,
) -> Loader:
    """A `Loader` over split ``split`` of dataset ``name`` yielding ``(images (b, H, W, C) uint8,
    labels (b,) int64)`` on ``device``; arguments as in the module docstring."""
    if backend not in LOADER_BACKENDS:
        raise ValueError(f"backend must be one of {LOADER_BACKENDS}, got {backend!r}")
    check_image_options(image_size, augment)
    check_threads(num_threads)
    device = resolve_device(device)
    dataset = load_dataset(name, root, split)
    return loader_from_dataset(
        dataset, batch_size, device, backend, shuffle=split == _spec(name).train_split if shuffle is None else shuffle,
        seed=seed, drop_last=drop_last, shard_id=shard_id, num_shards=num_shards, image_size=image_size,
        augment=augment, num_threads=num_threads, prefetch=prefetch,
    )


def loader_from_dataset(
    dataset: ArrayDataset | FileDataset,
    batch_size: int,
    device: str | torch.device,
    backend: LoaderBackend = "auto",
    *,
    shuffle: bool,
    seed: int = 0,
    drop_last: bool = False,
    shard_id: int = 0,
    num_shards: int = 1,
    image_size: int | None = None,
    augment: bool = False,
    num_threads: int | None = None,
    prefetch: int = DEFAULT_PREFETCH,
) -> Loader:
    """`make_loader` for a dataset already read (e.g. by `load_dataset`, to reuse it across loaders)."""
    if not isinstance(dataset, (ArrayDataset, FileDataset)):
        raise TypeError(f"dataset must be an ArrayDataset or FileDataset (see load_dataset), "
                        f"got {type(dataset).__name__}")
    if backend not in LOADER_BACKENDS:
        raise ValueError(f"backend must be one of {LOADER_BACKENDS}, got {backend!r}")
    check_image_options(image_size, augment)
    device = resolve_device(device)
    is_files = isinstance(dataset, FileDataset)
    if backend == "auto":
        if is_files:
            backend = "dali" if dali_available() else "cpu"
        else:
            backend = "resident" if device.type == "cuda" else "cpu"
    if not is_files and (image_size is not None or augment):
        raise ValueError(f"{dataset.name} is an array dataset: the loader neither resizes nor augments it "
                         "(image_size=None, augment=False); the fused mix op crops and flips on the device")
    policy = dict(shuffle=shuffle, seed=seed, drop_last=drop_last, shard_id=shard_id, num_shards=num_shards)
    if backend == "resident":
        if augment:
            raise ValueError("backend='resident' holds decoded images and does not augment; use augment=False "
                             "(the fused mix op crops and flips) or backend='dali'/'cpu'")
        if is_files:
            dataset = decode_file_dataset(dataset, image_size, check_threads(num_threads))
        return ResidentLoader(dataset, batch_size, device, **policy)
    if backend == "dali":
        if is_files:
            return DaliFileLoader(dataset, batch_size, device, image_size=image_size, augment=augment,
                                  num_threads=num_threads, prefetch=prefetch, **policy)
        return DaliArrayLoader(dataset, batch_size, device, num_threads=num_threads, prefetch=prefetch, **policy)
    if is_files:
        return HostFileLoader(dataset, batch_size, device, image_size=image_size, augment=augment,
                              num_threads=num_threads, **policy)
    return HostArrayLoader(dataset, batch_size, device, **policy)
