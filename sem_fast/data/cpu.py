"""The ``cpu`` backend: batches assembled in host memory, then moved to the device.

Arrays (CIFAR, SVHN, ...) are indexed on the host; image files are decoded with Pillow by a pool
of threads (Pillow releases the GIL while decoding). The epoch order is drawn on the CPU, so on a
CPU device these loaders yield exactly the batches of `ResidentLoader` for the same seed.
Batches bound for CUDA are pinned and copied without blocking.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from sem_fast._checks import check_positive_int
from sem_fast.data.datasets import ArrayDataset, FileDataset
from sem_fast.data.epochs import batch_spans, epoch_order, epoch_seed
from sem_fast.data.errors import DatasetFormatError
from sem_fast.data.image_folder import check_image_options, decode_image
from sem_fast.data.loader import Batch, Loader

# Decoding threads when not given: the host's cores, capped so that one loader per GPU on a
# many-GPU host does not oversubscribe it.
MAX_DEFAULT_THREADS = 8
CPU = torch.device("cpu")


def check_threads(num_threads: int | None) -> int:
    """``num_threads`` (a positive int), or the default when None."""
    if num_threads is None:
        return min(MAX_DEFAULT_THREADS, os.cpu_count() or 1)
    check_positive_int("num_threads", num_threads)
    return num_threads


def to_device(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``batch`` (a fresh host tensor) on ``device``; pinned + non-blocking when that is CUDA."""
    if device.type == "cuda":
        return batch.pin_memory().to(device, non_blocking=True)
    return batch


class HostArrayLoader(Loader):
    """Batches of an `ArrayDataset` gathered in host memory."""

    backend = "cpu"

    def __init__(self, dataset: ArrayDataset, batch_size: int, device: torch.device, **policy) -> None:
        super().__init__(len(dataset), dataset.num_classes, batch_size, device, **policy)
        self.images, self.labels = dataset.images, dataset.labels

    def _epoch_batches(self, epoch: int) -> Iterator[Batch]:
        order = epoch_order(self.dataset_size, epoch, self.seed, self.shuffle, CPU)
        for lo, hi in batch_spans(self.start, self.stop, self.batch_size):
            index = order[lo:hi]
            yield (to_device(self.images.index_select(0, index), self.device),
                   to_device(self.labels.index_select(0, index), self.device))


class HostFileLoader(Loader):
    """Batches of a `FileDataset` decoded with Pillow.

    ``image_size``: output side; None keeps the files' size (then all must share it).
    ``augment``: random-resized-crop to ``image_size`` + horizontal flip, drawn per sample from a
    generator seeded by ``(seed, epoch, position in the epoch)``, so results do not depend on
    thread timing. Without it, images of another size are resized (bilinear) to ``image_size``.
    """

    backend = "cpu"

    def __init__(
        self,
        dataset: FileDataset,
        batch_size: int,
        device: torch.device,
        *,
        image_size: int | None = None,
        augment: bool = False,
        num_threads: int | None = None,
        **policy,
    ) -> None:
        super().__init__(len(dataset), dataset.num_classes, batch_size, device, **policy)
        check_image_options(image_size, augment)
        self.files, self.labels = dataset.files, dataset.labels
        self.image_size, self.augment = image_size, augment
        self.num_threads = check_threads(num_threads)

    def _epoch_batches(self, epoch: int) -> Iterator[Batch]:
        order = epoch_order(self.dataset_size, epoch, self.seed, self.shuffle, CPU)
        augment_seed = epoch_seed(self.seed, epoch)

        def decode(position: int) -> np.ndarray:
            rng = np.random.default_rng([augment_seed, position]) if self.augment else None
            return decode_image(self.files[int(order[position])], self.image_size, rng)

        first: tuple[tuple[int, ...], str] | None = None
        with ThreadPoolExecutor(self.num_threads) as pool:
            for lo, hi in batch_spans(self.start, self.stop, self.batch_size):
                index = order[lo:hi]
                images = list(pool.map(decode, range(lo, hi)))
                first = first or (images[0].shape, self.files[int(index[0])])
                for image, i in zip(images, index.tolist()):
                    if image.shape != first[0]:
                        raise DatasetFormatError(
                            self.files[i], f"image is {image.shape[1]}x{image.shape[0]} but {first[1]} is "
                            f"{first[0][1]}x{first[0][0]}; pass image_size to resize all images to one size")
                yield (to_device(torch.from_numpy(np.stack(images)), self.device),
                       to_device(self.labels.index_select(0, index), self.device))
