"""The ``dali`` backend: NVIDIA DALI pipelines that hand uint8 NHWC batches to torch.

Two pipelines, on the GPU when ``device`` is CUDA and on DALI's CPU executor otherwise:

- arrays (`DaliArrayLoader`): host uint8 arrays -> ``fn.external_source`` (one batch of rows
  per step, in the shared epoch order) -> ``.gpu()``. No augmentation: the fused mix op crops,
  flips and normalizes on the device.
- image files (`DaliFileLoader`): ``fn.readers.file`` -> ``fn.decoders.image(device='mixed')``
  (nvJPEG; ``'cpu'`` on CPU) -> optional ``fn.resize`` to ``image_size``; with ``augment``,
  ``fn.decoders.image_random_crop`` (random-resized-crop ranges of torchvision) -> ``fn.resize``
  -> ``fn.flip`` with probability 1/2, all on the GPU.

Both visit exactly the samples of `sem_fast.data.epochs` (same order as the ``cpu`` backend for
the same seed, same shards, same last-batch policy): the reader is given this shard's files of
the epoch in order, so DALI's own sharding and shuffling are not used. The file pipeline is
rebuilt each epoch (its file list changes; about 30 ms on CPU); the array pipeline is built once.
DALI is imported lazily: ``pip install nvidia-dali-cuda130`` (CUDA 13) or ``nvidia-dali-cuda120``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import numpy as np
import torch

from sem_fast._checks import check_positive_int
from sem_fast.data.cpu import CPU, check_threads
from sem_fast.data.datasets import ArrayDataset, FileDataset
from sem_fast.data.epochs import batch_spans, epoch_order, epoch_seed
from sem_fast.data.errors import DatasetFormatError
from sem_fast.data.image_folder import RRC_ATTEMPTS, RRC_RATIO, RRC_SCALE, check_image_options
from sem_fast.data.loader import Batch, Loader

DALI_INSTALL = 'pip install "sem_fast[dali]" (nvidia-dali-cuda130, CUDA 13) or "sem_fast[dali-cuda120]" (CUDA 12)'
DEFAULT_PREFETCH = 2  # DALI's default queue depth: one batch being consumed while the next is prepared
DALI_SEED_MODULUS = 2**31  # DALI seeds are signed ints: keep ours non-negative and 31-bit


def dali_available() -> bool:
    """Whether ``nvidia.dali`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec("nvidia.dali") is not None
    except ModuleNotFoundError:
        return False


def _import_dali():
    try:
        import nvidia.dali as dali
        from nvidia.dali.plugin.pytorch import feed_ndarray
    except ImportError as err:
        raise ImportError(f"backend='dali' needs NVIDIA DALI: {DALI_INSTALL}") from err
    return dali, feed_ndarray


def _to_torch(outputs, device: torch.device, dtype: torch.dtype, feed_ndarray) -> torch.Tensor:
    """A dense DALI ``TensorList`` copied into a new torch tensor on ``device`` (on torch's current stream)."""
    if not outputs.is_dense_tensor():
        shapes = sorted({tuple(s) for s in outputs.shape()})
        raise ValueError(f"the images of a batch differ in size ({shapes[:4]}...); pass image_size to resize them")
    dense = outputs.as_tensor()
    out = torch.empty(dense.shape(), dtype=dtype, device=device)
    stream = torch.cuda.current_stream(device) if device.type == "cuda" else None
    return feed_ndarray(dense, out, cuda_stream=stream)


class _DaliLoader(Loader):
    """Pipeline settings shared by both DALI loaders."""

    backend = "dali"

    def __init__(self, dataset_size: int, num_classes: int, batch_size: int, device: torch.device, *,
                 num_threads: int | None, prefetch: int, **policy) -> None:
        super().__init__(dataset_size, num_classes, batch_size, device, **policy)
        check_positive_int("prefetch", prefetch)
        self.num_threads, self.prefetch = check_threads(num_threads), prefetch
        self._dali, self._feed_ndarray = _import_dali()
        self._on_gpu = device.type == "cuda"

    def _pipeline(self, seed: int):
        return self._dali.Pipeline(
            batch_size=self.batch_size, num_threads=self.num_threads, seed=seed % DALI_SEED_MODULUS,
            device_id=self.device.index if self._on_gpu else None, prefetch_queue_depth=self.prefetch,
        )

    def _torch(self, outputs, dtype: torch.dtype) -> torch.Tensor:
        return _to_torch(outputs, self.device, dtype, self._feed_ndarray)


class DaliArrayLoader(_DaliLoader):
    """Batches of an `ArrayDataset` fed to DALI by ``external_source``; the pipeline is re-run
    each epoch after a ``reset`` (or rebuilt when the previous epoch was left unfinished)."""

    def __init__(self, dataset: ArrayDataset, batch_size: int, device: torch.device, *,
                 num_threads: int | None = None, prefetch: int = DEFAULT_PREFETCH, **policy) -> None:
        super().__init__(len(dataset), dataset.num_classes, batch_size, device,
                         num_threads=num_threads, prefetch=prefetch, **policy)
        self.images, self.labels = dataset.images.numpy(), dataset.labels.numpy()
        self._plan: list[np.ndarray] = []
        self._pipe = None
        self._finished = False

    def _source(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The batches of the current plan; DALI calls it again after each ``reset`` (``cycle='raise'``)."""
        for index in self._plan:
            yield self.images[index], self.labels[index]

    def _build(self):
        fn = self._dali.fn
        pipe = self._pipeline(self.seed)
        with pipe:
            images, labels = fn.external_source(source=self._source, num_outputs=2, batch=True, cycle="raise",
                                                layout=["HWC", ""])
            if self._on_gpu:
                images, labels = images.gpu(), labels.gpu()
            pipe.set_outputs(images, labels)
        pipe.build()
        return pipe

    def _epoch_batches(self, epoch: int) -> Iterator[Batch]:
        order = epoch_order(self.dataset_size, epoch, self.seed, self.shuffle, CPU).numpy()
        self._plan = [order[lo:hi] for lo, hi in batch_spans(self.start, self.stop, self.batch_size)]
        if self._pipe is not None and self._finished:
            self._pipe.reset()
        else:
            self._pipe = None  # free an unfinished epoch's pipeline (and its prefetched batches) first
            self._pipe = self._build()
        self._finished = False
        for _ in self._plan:
            images, labels = self._pipe.run()
            yield self._torch(images, torch.uint8), self._torch(labels, torch.int64)
        try:
            self._pipe.run()
        except StopIteration:
            self._finished = True
        else:
            raise RuntimeError("DALI external_source ran past the end of the epoch")


class DaliFileLoader(_DaliLoader):
    """Batches of a `FileDataset` read, decoded (and augmented) by DALI.

    ``image_size``: output side, None keeps the files' size (all must share it). ``augment``:
    random-resized-crop to ``image_size`` + horizontal flip, seeded from ``(seed, epoch)``.
    """

    def __init__(self, dataset: FileDataset, batch_size: int, device: torch.device, *, image_size: int | None = None,
                 augment: bool = False, num_threads: int | None = None, prefetch: int = DEFAULT_PREFETCH,
                 **policy) -> None:
        super().__init__(len(dataset), dataset.num_classes, batch_size, device,
                         num_threads=num_threads, prefetch=prefetch, **policy)
        check_image_options(image_size, augment)
        self.name, self.files, self.labels = dataset.name, dataset.files, dataset.labels
        self.image_size, self.augment = image_size, augment

    def _build(self, files: list[str], labels: list[int], seed: int):
        fn, types = self._dali.fn, self._dali.types
        decoder = "mixed" if self._on_gpu else "cpu"
        size = [self.image_size, self.image_size]
        pipe = self._pipeline(seed)
        with pipe:
            encoded, label = fn.readers.file(files=files, labels=labels, random_shuffle=False, pad_last_batch=True)
            if self.augment:
                images = fn.decoders.image_random_crop(
                    encoded, device=decoder, output_type=types.RGB, random_area=list(RRC_SCALE),
                    random_aspect_ratio=list(RRC_RATIO), num_attempts=RRC_ATTEMPTS)
                images = fn.flip(fn.resize(images, size=size), horizontal=fn.random.coin_flip(probability=0.5))
            else:
                images = fn.decoders.image(encoded, device=decoder, output_type=types.RGB)
                if self.image_size is not None:
                    images = fn.resize(images, size=size)
            if self._on_gpu:
                label = label.gpu()
            pipe.set_outputs(images, label)
        pipe.build()
        return pipe

    def _epoch_batches(self, epoch: int) -> Iterator[Batch]:
        order = epoch_order(self.dataset_size, epoch, self.seed, self.shuffle, CPU)[self.start : self.stop].tolist()
        pipe = self._build([self.files[i] for i in order], [int(self.labels[i]) for i in order],
                           epoch_seed(self.seed, epoch))
        for lo, hi in batch_spans(0, len(order), self.batch_size):
            try:
                images, labels = pipe.run()
            except RuntimeError as err:
                window = order[lo : lo + self.batch_size * (1 + self.prefetch)]
                raise DatasetFormatError(
                    self.name, f"DALI failed on a batch from one of these files (truncated or not a JPEG/PNG?): "
                    f"{[self.files[i] for i in window[:8]]}{' ...' if len(window) > 8 else ''}\nDALI said: {err}"
                ) from err
            count = hi - lo
            yield self._torch(images, torch.uint8)[:count], self._torch(labels, torch.int32).view(-1)[:count].long()
