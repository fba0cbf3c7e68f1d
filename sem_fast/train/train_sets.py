"""The training sets of the recipes (which `sem_fast.data` dataset backs each, and its statistics),
`read_split` and `open_loader`, which give the trainer and the evaluation their splits and
loaders, and `subset_and_validation`, the class-balanced training subset and validation split."""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import torch

from sem_fast.config import CIFAR10_MEAN, CIFAR10_STD
from sem_fast.data import (
    CIFAR10_CLASSES, ArrayDataset, DatasetNotFoundError, FileDataset, Loader, load_dataset, loader_from_dataset,
)  # fmt: skip


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
        class_names: the name of each label, where the dataset has them (figures); else empty.
    """

    data_names: tuple[str, ...]
    train_split: str
    test_split: str
    num_classes: int
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    description: str
    class_names: tuple[str, ...] = ()


#: Per-channel statistics of the CIFAR-100 and Tiny-ImageNet training sets (0..1 units), the
#: values the CIFAR / Tiny-ImageNet literature normalizes with.
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
TINYIMAGENET_MEAN, TINYIMAGENET_STD = (0.4802, 0.4481, 0.3975), (0.2770, 0.2691, 0.2821)

TRAIN_SETS: dict[str, TrainSet] = {
    "c10": TrainSet(
        ("cifar10", "cifar10-npz"), "train", "test", 10, 32, CIFAR10_MEAN, CIFAR10_STD,
        "CIFAR-10: torchvision's cifar-10-batches-py/, or the shared cifar10_{train.0,train.1,test}.npz.xz",
        CIFAR10_CLASSES,
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
        "the CIFAR-10 subset shipped in the package (3,000 train / 1,000 test images)", CIFAR10_CLASSES,
    ),
}  # fmt: skip


Dataset = ArrayDataset | FileDataset


def read_split(train_set: TrainSet, root: str | Path, split: str, classes: tuple[int, ...] = ()) -> Dataset:
    """Split ``split`` of ``train_set`` from the first of its ``data_names`` whose files are under ``root``.

    ``classes``: keep only these classes, relabelled ``0..len(classes)-1`` in that order (held-out
    class OOD experiments); needs an array dataset.
    """
    errors = []
    for name in train_set.data_names:
        try:
            dataset = load_dataset(name, root, split)
        except DatasetNotFoundError as err:
            errors.append(str(err))
            continue
        if not classes:
            return dataset
        if not isinstance(dataset, ArrayDataset):
            raise ValueError(f"classes needs an array dataset (CIFAR); {name} is a folder of image files")
        return select_classes(dataset, classes)
    raise DatasetNotFoundError(" or ".join(train_set.data_names), root, [], hint="\n".join(errors))


def open_loader(
    dataset: Dataset,
    batch_size: int,
    device: torch.device,
    backend: str,
    *,
    train: bool,
    seed: int,
    shard_id: int = 0,
    num_shards: int = 1,
) -> Loader:
    """A loader of ``dataset`` on ``device``: shuffled, full batches only when ``train``.
    ``shard_id``/``num_shards``: this DDP rank's part of every epoch (`sem_fast.data.epochs`)."""
    return loader_from_dataset(dataset, batch_size, device, backend, shuffle=train, seed=seed, drop_last=train,
                               shard_id=shard_id, num_shards=num_shards)  # fmt: skip


def select_classes(dataset: ArrayDataset, classes: tuple[int, ...]) -> ArrayDataset:
    """The samples of ``dataset`` whose label is in ``classes``, relabelled to their position there."""
    relabel = torch.full((dataset.num_classes,), -1, dtype=torch.int64)
    relabel[torch.tensor(classes)] = torch.arange(len(classes))
    new_labels = relabel[dataset.labels]
    keep = new_labels >= 0
    return ArrayDataset(f"{dataset.name}-classes", dataset.images[keep].contiguous(), new_labels[keep], len(classes))


def subset_and_validation(dataset: Dataset, subset: float, val_split: float, seed: int) -> tuple[Dataset, Dataset | None]:
    """``(training part, validation part or None)`` of a training split, both class-balanced.

    ``subset``: 0 keeps every image; ``N >= 1`` keeps ``N // K`` images of each of the ``K``
    classes (the remainder one more each for classes drawn by ``seed``); a fraction ``f < 1``
    keeps ``round(f * n_k)`` of each class's ``n_k``. ``val_split``: then ``round(val_split * m_k)``
    of each class's kept ``m_k`` images go to the validation part. Which images is drawn by
    ``seed`` (one permutation per class), so the same seed gives the same parts, and a smaller
    subset is part of a larger one.
    """
    labels = dataset.labels
    k = dataset.num_classes
    generator = torch.Generator().manual_seed(seed)
    counts = torch.bincount(labels, minlength=k)
    if subset >= 1:
        keep = torch.full((k,), int(subset) // k, dtype=torch.int64)
        keep[torch.randperm(k, generator=generator)[: int(subset) % k]] += 1
        short = [c for c in range(k) if keep[c] > counts[c]]
        if short:
            raise ValueError(
                f"train_subset (--train-subset) {int(subset)} needs {int(keep[short[0]])} images of class {short[0]}, "
                f"{dataset.name} has {int(counts[short[0]])}; choose at most {k * int(counts.min())} images or a fraction"
            )
    elif subset > 0:
        keep = torch.floor(subset * counts.double() + 0.5).long()
    else:
        keep = counts
    train_index, val_index = [], []
    for c in range(k):
        members = torch.nonzero(labels == c).flatten()
        chosen = members[torch.randperm(members.numel(), generator=generator)[: int(keep[c])]]
        n_val = math.floor(val_split * chosen.numel() + 0.5)
        val_index.append(chosen[:n_val])
        train_index.append(chosen[n_val:])
    train_part = _take(dataset, torch.cat(train_index).sort().values, "train")
    if not val_split:
        return train_part, None
    val = torch.cat(val_index).sort().values
    if val.numel() == 0:
        raise ValueError(f"val_split (--val-split) {val_split} holds out no image of {dataset.name}; raise it")
    return train_part, _take(dataset, val, "val")


def _take(dataset: Dataset, index: torch.Tensor, part: str) -> Dataset:
    if index.numel() == 0:
        raise ValueError(f"--train-subset / --val-split leave no training image of {dataset.name}")
    if isinstance(dataset, ArrayDataset):
        return ArrayDataset(f"{dataset.name}-{part}", dataset.images[index].contiguous(), dataset.labels[index],
                            dataset.num_classes)  # fmt: skip
    return FileDataset(f"{dataset.name}-{part}", tuple(dataset.files[i] for i in index.tolist()),
                       dataset.labels[index], dataset.classes)  # fmt: skip
