"""The two in-memory forms of a dataset that the loaders consume.

`ArrayDataset` holds decoded images (CIFAR, SVHN, ...): the whole split as one uint8 NHWC
tensor. `FileDataset` holds encoded image files (ImageFolder, Tiny-ImageNet): paths and labels,
decoded per batch by the loader.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ArrayDataset:
    """A split held as arrays on the CPU.

    images: ``(N, H, W, C)`` uint8, contiguous, RGB. labels: ``(N,)`` int64 in ``[0, num_classes)``.
    """

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int

    def __post_init__(self) -> None:
        x, y = self.images, self.labels
        if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[0] == 0:
            raise ValueError(f"{self.name}: images must be a non-empty (N, H, W, C) uint8 tensor, got "
                             f"{x.dtype} {tuple(x.shape)}")
        if y.dtype != torch.int64 or y.shape != (x.shape[0],):
            raise ValueError(f"{self.name}: labels must be ({x.shape[0]},) int64, got {y.dtype} {tuple(y.shape)}")
        lo, hi = (int(v) for v in y.aminmax())
        if lo < 0 or hi >= self.num_classes:
            raise ValueError(f"{self.name}: labels must lie in [0, {self.num_classes}), found {lo if lo < 0 else hi}")

    def __len__(self) -> int:
        return self.images.shape[0]


@dataclass(frozen=True)
class FileDataset:
    """A split held as encoded image files (JPEG/PNG).

    files: absolute paths, one per sample. labels: ``(N,)`` int64, ``labels[i]`` indexes ``classes``.
    """

    name: str
    files: tuple[str, ...]
    labels: torch.Tensor
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.files:
            raise ValueError(f"{self.name}: no image files")
        if self.labels.dtype != torch.int64 or self.labels.shape != (len(self.files),):
            raise ValueError(f"{self.name}: labels must be ({len(self.files)},) int64, got "
                             f"{self.labels.dtype} {tuple(self.labels.shape)}")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.files)
