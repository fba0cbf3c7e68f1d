"""Data: dataset readers and loaders that hand uint8 NHWC batches to the fused mix op.

Start with `make_loader` (see `sem_fast.data.factory` for the datasets, loader backends and
policy). The evaluation's robustness sets are read here too: CIFAR-10.1 and CIFAR-10.2 through
`make_loader` / `load_dataset`, CIFAR-10-C / CIFAR-100-C by corruption and severity with
`read_cifar_c` (`sem_fast.data.cifar_c`).
"""

import warnings
from typing import Any

from sem_fast.data.bundled import CIFAR10_CLASSES, load_bundled
from sem_fast.data.cifar import read_cifar10_1, read_cifar10_2
from sem_fast.data.cifar_c import CIFAR_C_CORRUPTIONS, cifar_c_corruptions, read_cifar_c
from sem_fast.data.dali import dali_available
from sem_fast.data.datasets import ArrayDataset, FileDataset
from sem_fast.data.errors import DatasetFormatError, DatasetNotFoundError
from sem_fast.data.factory import (
    DATASETS, LOADER_BACKENDS, LoaderBackend, load_dataset, loader_from_dataset, make_loader,
)  # fmt: skip
from sem_fast.data.loader import Loader

__all__ = [
    "CIFAR10_CLASSES", "CIFAR_C_CORRUPTIONS", "DATASETS", "LOADER_BACKENDS", "ArrayDataset", "DatasetFormatError",
    "DatasetNotFoundError", "FileDataset", "Loader", "LoaderBackend", "cifar_c_corruptions", "dali_available",
    "load_bundled", "load_dataset", "loader_from_dataset", "make_loader", "read_cifar10_1", "read_cifar10_2",
    "read_cifar_c",
]  # fmt: skip


def __getattr__(name: str) -> Any:
    """Deprecated names: ``BACKENDS`` is now `LOADER_BACKENDS` (one meaning per name: the op
    backends are another thing)."""
    if name == "BACKENDS":
        warnings.warn(
            "sem_fast.data.BACKENDS is deprecated; use sem_fast.data.LOADER_BACKENDS", DeprecationWarning, stacklevel=2
        )
        return LOADER_BACKENDS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
