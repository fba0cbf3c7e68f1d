"""CIFAR readers: torchvision's on-disk layout, the xz-compressed npz arrays, CIFAR-10.1, CIFAR-10.2.

Every reader returns an `ArrayDataset` (uint8 ``(N, 32, 32, 3)`` NHWC RGB, int64 labels) and reads
only local files: a missing file raises `DatasetNotFoundError` listing the files expected under
the root, a truncated or malformed one `DatasetFormatError` naming it.
"""

from __future__ import annotations

import io
import lzma
import pickle
import re
import zipfile
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from sem_fast.data.datasets import ArrayDataset
from sem_fast.data.errors import DatasetFormatError, DatasetNotFoundError

CIFAR_SIDE = 32  # CIFAR images are 32x32 RGB
CIFAR_ROW = 3 * CIFAR_SIDE * CIFAR_SIDE  # one image in the pickled batches: 3072 bytes, CHW order

# torchvision's layout: folder, file names per split, label key, number of classes.
_TORCHVISION_LAYOUT = {
    "cifar10": ("cifar-10-batches-py", {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]},
                "labels", 10),
    "cifar100": ("cifar-100-python", {"train": ["train"], "test": ["test"]}, "fine_labels", 100),
}
# The only globals a CIFAR batch pickle may reference: numpy's array reconstruction (numpy 1 and 2)
# and `_codecs.encode`, with which Python 3 writes bytes in protocol-2 pickles.
_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}  # fmt: skip


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists and numpy arrays only: a batch file cannot run code when loaded."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch")
        return super().find_class(module, name)


def _split_check(dataset: str, split: str, splits: tuple[str, ...]) -> None:
    if split not in splits:
        raise ValueError(f"split must be one of {splits} for {dataset}, got {split!r}")


def read_cifar_torchvision(root: str | Path, dataset: Literal["cifar10", "cifar100"], split: str) -> ArrayDataset:
    """CIFAR-10/100 from torchvision's layout: ``root/cifar-10-batches-py/data_batch_1..5, test_batch``
    or ``root/cifar-100-python/train, test`` (``root`` may also be that folder itself).

    CIFAR-100 labels are the 100 fine labels.
    """
    folder, files, label_key, num_classes = _TORCHVISION_LAYOUT[dataset]
    _split_check(dataset, split, ("train", "test"))
    root = Path(root)
    base = root if root.name == folder else root / folder
    names = files[split]
    missing = [n for n in names if not (base / n).is_file()]
    if missing:
        raise DatasetNotFoundError(dataset, root, [f"{folder}/{n}" for n in names],
                                   hint=f"missing: {', '.join(missing)} (torchvision's python-version layout)")
    images, labels = [], []
    for name in names:
        x, y = _read_batch(base / name, label_key)
        images.append(x)
        labels.append(y)
    x = np.concatenate(images).reshape(-1, 3, CIFAR_SIDE, CIFAR_SIDE).transpose(0, 2, 3, 1)
    return ArrayDataset(f"{dataset}-{split}", torch.from_numpy(np.ascontiguousarray(x)),
                        torch.from_numpy(np.concatenate(labels)), num_classes)


def _read_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch: ``data (n, 3072) uint8`` and the labels under ``label_key``."""
    try:
        with path.open("rb") as f:
            batch = _ArrayOnlyUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise DatasetFormatError(path, f"not a readable CIFAR batch pickle (truncated or corrupt?): {err}") from err
    if not isinstance(batch, dict):
        raise DatasetFormatError(path, f"a CIFAR batch must unpickle to a dict, got {type(batch).__name__}")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or label_key not in batch:
        raise DatasetFormatError(path, f"a CIFAR batch needs keys 'data' and {label_key!r}, found {sorted(batch)}")
    data, labels = batch["data"], np.asarray(batch[label_key])
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != CIFAR_ROW:
        raise DatasetFormatError(path, f"'data' must be a uint8 (n, {CIFAR_ROW}) array, got "
                                       f"{getattr(data, 'dtype', type(data).__name__)} {np.shape(data)}")
    if labels.shape != (data.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise DatasetFormatError(path, f"{label_key!r} must hold {data.shape[0]} integer labels, got "
                                       f"{labels.dtype} {labels.shape}")
    return data, labels.astype(np.int64)


# The compressed arrays of the project's shared data folder: `<stem>.npz.xz` or shards
# `<stem>.0.npz.xz`, `<stem>.1.npz.xz`, ... (see shared/data/README.md).
NPZ_STEMS = {"train": "cifar10_train", "test": "cifar10_test"}
NPZ_COUNTS = {"train": 50_000, "test": 10_000}  # CIFAR-10's split sizes: a missing shard shows up here


def read_npz_xz(root: str | Path, stem: str, dataset: str, num_classes: int) -> ArrayDataset:
    """Arrays ``x`` uint8 ``(N, H, W, 3)`` and ``y`` ``(N,)`` from ``root/<stem>.npz.xz`` or from its
    numbered shards ``root/<stem>.<k>.npz.xz`` (k = 0, 1, ... consecutive), concatenated in order;
    ``dataset`` names the dataset in errors."""
    root = Path(root)
    single = root / f"{stem}.npz.xz"
    shards = [p for p in root.glob(f"{stem}.*.npz.xz") if re.fullmatch(rf"{re.escape(stem)}\.\d+\.npz\.xz", p.name)]
    shards.sort(key=lambda p: int(p.name.split(".")[-3]))
    if single.is_file():
        paths = [single]
    elif shards:
        numbers = [int(p.name.split(".")[-3]) for p in shards]
        if numbers != list(range(len(numbers))):
            raise DatasetFormatError(root, f"shards of {stem} must be numbered 0..{len(numbers) - 1} "
                                           f"consecutively, found {numbers}")
        paths = shards
    else:
        raise DatasetNotFoundError(dataset, root, [f"{stem}.npz.xz", f"{stem}.0.npz.xz (+ .1, ... shards)"])
    xs, ys = [], []
    for path in paths:
        try:
            with np.load(io.BytesIO(lzma.decompress(path.read_bytes()))) as arrays:
                x, y = arrays["x"], arrays["y"]
        except (lzma.LZMAError, EOFError, zipfile.BadZipFile, ValueError, OSError) as err:
            raise DatasetFormatError(path, f"not a readable xz-compressed .npz (truncated or corrupt?): {err}") from err
        except KeyError as err:
            raise DatasetFormatError(path, f"the archive needs arrays 'x' and 'y': {err}") from err
        if x.dtype != np.uint8 or x.ndim != 4 or y.shape != (x.shape[0],):
            raise DatasetFormatError(path, f"expected x uint8 (N, H, W, C) and y (N,), got x {x.dtype} {x.shape}, "
                                           f"y {y.shape}")
        xs.append(x)
        ys.append(y.astype(np.int64))
    return ArrayDataset(stem, torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys)), num_classes)


def read_cifar10_npz(root: str | Path, split: str) -> ArrayDataset:
    """CIFAR-10 from the shared xz-compressed arrays (``cifar10_train.{0,1}.npz.xz``, ``cifar10_test.npz.xz``);
    checks the split has all of CIFAR-10's images (50,000 train / 10,000 test)."""
    _split_check("cifar10-npz", split, tuple(NPZ_STEMS))
    data = read_npz_xz(root, NPZ_STEMS[split], "cifar10-npz", 10)
    if len(data) != NPZ_COUNTS[split]:
        raise DatasetFormatError(Path(root) / NPZ_STEMS[split], f"expected {NPZ_COUNTS[split]} images for the "
                                 f"{split} split, found {len(data)} (is a shard missing?)")
    return data


def read_cifar10_1(root: str | Path, split: str = "test", version: str = "v6") -> ArrayDataset:
    """CIFAR-10.1 (test only): ``root/cifar10.1_<version>_data.npy`` uint8 ``(N, 32, 32, 3)`` and
    ``root/cifar10.1_<version>_labels.npy`` ``(N,)``, as published (v6: 2,000 images; v4: 2,021)."""
    _split_check("cifar10.1", split, ("test",))
    root = Path(root)
    names = [f"cifar10.1_{version}_data.npy", f"cifar10.1_{version}_labels.npy"]
    if not all((root / n).is_file() for n in names):
        raise DatasetNotFoundError("cifar10.1", root, names)
    arrays = []
    for n in names:
        try:
            arrays.append(np.load(root / n, allow_pickle=False))
        except (ValueError, EOFError, OSError) as err:
            raise DatasetFormatError(root / n, f"not a readable .npy file (truncated or corrupt?): {err}") from err
    x, y = arrays
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (CIFAR_SIDE, CIFAR_SIDE, 3):
        raise DatasetFormatError(root / names[0], f"expected uint8 (N, 32, 32, 3), got {x.dtype} {x.shape}")
    if y.shape != (x.shape[0],) or not np.issubdtype(y.dtype, np.integer):
        raise DatasetFormatError(root / names[1], f"expected {x.shape[0]} integer labels, got {y.dtype} {y.shape}")
    return ArrayDataset(f"cifar10.1-{version}", torch.from_numpy(np.ascontiguousarray(x)),
                        torch.from_numpy(y.astype(np.int64)), 10)


#: CIFAR-10.2 (Lu et al. 2020) as published: one archive holding the test set.
CIFAR10_2_FILE = "cifar102_test.npz"


def read_cifar10_2(root: str | Path, split: str = "test") -> ArrayDataset:
    """CIFAR-10.2 (test only): ``root/cifar102_test.npz`` with ``images`` uint8 ``(N, 32, 32, 3)``
    and ``labels`` ``(N,)``, as published (2,000 images)."""
    _split_check("cifar10.2", split, ("test",))
    path = Path(root) / CIFAR10_2_FILE
    if not path.is_file():
        raise DatasetNotFoundError("cifar10.2", root, [CIFAR10_2_FILE])
    try:
        with np.load(path, allow_pickle=False) as archive:
            images, labels = archive["images"], archive["labels"]
    except (KeyError, ValueError, OSError, EOFError) as err:
        raise DatasetFormatError(path, f"expected an .npz with arrays 'images' and 'labels': {err}") from err
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
        raise DatasetFormatError(path, f"'images' must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
    if labels.shape != (images.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise DatasetFormatError(path, f"'labels' must hold {images.shape[0]} integers, got {labels.dtype} {labels.shape}")
    return ArrayDataset("cifar10.2-test", torch.from_numpy(np.ascontiguousarray(images)),
                        torch.from_numpy(labels.astype(np.int64)), 10)  # fmt: skip
