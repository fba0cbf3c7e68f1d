"""Data: dataset readers and loaders that hand uint8 NHWC batches to the fused mix op.

Start with `make_loader` (see `sem_fast.data.factory` for the datasets, backends and policy).
"""

from sem_fast.data.bundled import CIFAR10_CLASSES, load_bundled
from sem_fast.data.dali import dali_available
from sem_fast.data.datasets import ArrayDataset, FileDataset
from sem_fast.data.errors import DatasetFormatError, DatasetNotFoundError
from sem_fast.data.factory import BACKENDS, DATASETS, load_dataset, loader_from_dataset, make_loader
from sem_fast.data.loader import Loader

__all__ = [
    "BACKENDS", "CIFAR10_CLASSES", "DATASETS", "ArrayDataset", "DatasetFormatError", "DatasetNotFoundError",
    "FileDataset", "Loader", "dali_available", "load_bundled", "load_dataset", "loader_from_dataset", "make_loader",
]  # fmt: skip
