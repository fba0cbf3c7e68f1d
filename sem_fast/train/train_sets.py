"""The training sets of the recipes (which `sem_fast.data` dataset backs each, and its statistics)
and `open_loader`, which opens their train and test loaders for the trainer and the evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch

from sem_fast.config import CIFAR10_MEAN, CIFAR10_STD
from sem_fast.data import ArrayDataset, DatasetNotFoundError, Loader, load_dataset, loader_from_dataset, make_loader


class TrainSet(NamedTuple):
    """A training set as the trainer sees it.

    Attributes:
        data_names: `sem_fast.data` dataset names that can back it, tried in order (the first
            whose files are under the data root is used).
        train_split, test_split: split names in `sem_fast.data`.
        num_classes: number of classes.
        image_size: side of the (square) images.
        mean, std: per-channel statistics of the training images in 0..1 units.
        description: one line for ``sem-fast recipes`` and the README.
    """

    data_names: tuple[str, ...]
    train_split: str
    test_split: str
    num_classes: int
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    description: str


#: Per-channel statistics of the CIFAR-100 and Tiny-ImageNet training sets (0..1 units), the
#: values the CIFAR / Tiny-ImageNet literature normalizes with.
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
TINYIMAGENET_MEAN, TINYIMAGENET_STD = (0.4802, 0.4481, 0.3975), (0.2770, 0.2691, 0.2821)

TRAIN_SETS: dict[str, TrainSet] = {
    "c10": TrainSet(
        ("cifar10", "cifar10-npz"), "train", "test", 10, 32, CIFAR10_MEAN, CIFAR10_STD,
        "CIFAR-10: torchvision's cifar-10-batches-py/, or the shared cifar10_{train.0,train.1,test}.npz.xz",
    ),
    "c100": TrainSet(
        ("cifar100",), "train", "test", 100, 32, CIFAR100_MEAN, CIFAR100_STD,
        "CIFAR-100: torchvision's cifar-100-python/",
    ),
    "timagenet": TrainSet(
        ("tiny-imagenet",), "train", "val", 200, 64, TINYIMAGENET_MEAN, TINYIMAGENET_STD,
        "Tiny-ImageNet-200 as published (tiny-imagenet-200/), 64x64; tested on its labelled val split",
    ),
    "c10-bundled": TrainSet(
        ("cifar10-bundled",), "train", "test", 10, 32, CIFAR10_MEAN, CIFAR10_STD,
        "the CIFAR-10 subset shipped in the package (3,000 train / 1,000 test images)",
    ),
}  # fmt: skip


def open_loader(
    train_set: TrainSet,
    root: str | Path,
    split: str,
    batch_size: int,
    device: torch.device,
    backend: str,
    *,
    classes: tuple[int, ...] = (),
    train: bool,
    seed: int,
    shard_id: int = 0,
    num_shards: int = 1,
) -> Loader:
    """A loader of ``split`` (shuffled, full batches only when ``train``) on ``device``, from the
    first of ``train_set.data_names`` whose files are under ``root``.

    ``classes``: keep only these classes, relabelled ``0..len(classes)-1`` in that order (held-out
    class OOD experiments); needs an array dataset. ``shard_id``/``num_shards``: this DDP rank's
    part of every epoch (`sem_fast.data.epochs`).
    """
    policy = {"shuffle": train, "seed": seed, "drop_last": train, "shard_id": shard_id, "num_shards": num_shards}
    errors = []
    for name in train_set.data_names:
        try:
            if not classes:
                return make_loader(name, root, split, batch_size, device, backend, **policy)
            dataset = load_dataset(name, root, split)
        except DatasetNotFoundError as err:
            errors.append(str(err))
            continue
        if not isinstance(dataset, ArrayDataset):
            raise ValueError(f"classes needs an array dataset (CIFAR); {name} is a folder of image files")
        return loader_from_dataset(select_classes(dataset, classes), batch_size, device, backend, **policy)
    raise DatasetNotFoundError(" or ".join(train_set.data_names), root, [], hint="\n".join(errors))


def select_classes(dataset: ArrayDataset, classes: tuple[int, ...]) -> ArrayDataset:
    """The samples of ``dataset`` whose label is in ``classes``, relabelled to their position there."""
    relabel = torch.full((dataset.num_classes,), -1, dtype=torch.int64)
    relabel[torch.tensor(classes)] = torch.arange(len(classes))
    new_labels = relabel[dataset.labels]
    keep = new_labels >= 0
    return ArrayDataset(f"{dataset.name}-classes", dataset.images[keep].contiguous(), new_labels[keep], len(classes))
