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
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from sem_fast.data.arrays import check_images, check_labels, read_npy, read_npz
from sem_fast.data.datasets import ArrayDataset
from sem_fast.data.errors import DatasetFormatError, DatasetNotFoundError

CIFAR_SIDE = 32  # CIFAR images are 32x32 RGB
CIFAR_SHAPE = (CIFAR_SIDE, CIFAR_SIDE)
CIFAR_ROW = 3 * CIFAR_SIDE * CIFAR_SIDE  # one image in the pickled batches: 3072 bytes, CHW order

# torchvision's layout: folder, file names per split, label key, number of classes.
_TORCHVISION_LAYOUT = {
    "cifar10": ("cifar-10-batches-py", {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]},
                "labels", 10),
    "cifar100": ("cifar-100-python", {"train": ["train"], "test": ["test"]}, "fine_labels", 100),
}
# The only globals a CIFAR batch pickle may reference: numpy's array and scalar reconstruction
# (numpy 1 and 2; a label list may hold numpy integer scalars) and `_codecs.encode`, with which
# Python 3 writes bytes in protocol-2 pickles.
_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
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
        x, y = _read_batch(base / name, label_key, num_classes)
        images.append(x)
        labels.append(y)
    x = np.concatenate(images).reshape(-1, 3, CIFAR_SIDE, CIFAR_SIDE).transpose(0, 2, 3, 1)
    return ArrayDataset(f"{dataset}-{split}", torch.from_numpy(np.ascontiguousarray(x)),
                        torch.from_numpy(np.concatenate(labels)), num_classes)


def _read_batch(path: Path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch: ``data (n, 3072) uint8`` and the labels under ``label_key``, checked."""
    try:
        # Unpickled from memory: a corrupt length field then reads past the end (an error)
        # instead of asking the file for gigabytes.
        batch = _ArrayOnlyUnpickler(io.BytesIO(path.read_bytes()), encoding="latin1").load()
    except Exception as err:  # noqa: BLE001 - a corrupt pickle raises almost any type (IndexError, MemoryError, ...)
        raise DatasetFormatError(path, f"not a readable CIFAR batch pickle (truncated or corrupt?): "
                                       f"{type(err).__name__}: {err}") from None  # fmt: skip
    if not isinstance(batch, dict):
        raise DatasetFormatError(path, f"a CIFAR batch must unpickle to a dict, got {type(batch).__name__}")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or label_key not in batch:
        raise DatasetFormatError(path, f"a CIFAR batch needs keys 'data' and {label_key!r}, found "
                                       f"{sorted(map(str, batch))}")  # fmt: skip
    data = batch["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != CIFAR_ROW:
        raise DatasetFormatError(path, f"'data' must be a uint8 (n, {CIFAR_ROW}) array, got "
                                       f"{getattr(data, 'dtype', type(data).__name__)} {np.shape(data)}")
    if data.shape[0] == 0:
        raise DatasetFormatError(path, "'data' holds no images")
    labels = check_labels(batch[label_key], str(path), repr(label_key), count=data.shape[0], num_classes=num_classes)
    return data, labels


# The compressed arrays of the project's shared data folder: `<stem>.npz.xz` or shards
# `<stem>.0.npz.xz`, `<stem>.1.npz.xz`, ... (see shared/data/README.md).
NPZ_STEMS = {"train": "cifar10_train", "test": "cifar10_test"}
NPZ_COUNTS = {"train": 50_000, "test": 10_000}  # CIFAR-10's split sizes: a missing shard shows up here


def read_npz_xz(
    root: str | Path, stem: str, dataset: str, num_classes: int, side: tuple[int, int] = CIFAR_SHAPE
) -> ArrayDataset:
    """Arrays ``x`` uint8 ``(N, *side, 3)`` and ``y`` ``(N,)`` (labels in ``[0, num_classes)``) from
    ``root/<stem>.npz.xz`` or from its numbered shards ``root/<stem>.<k>.npz.xz`` (k = 0, 1, ...
    consecutive), concatenated in order; ``dataset`` names the dataset in errors."""
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
            raw = lzma.decompress(path.read_bytes())
        except (lzma.LZMAError, EOFError, OSError) as err:
            raise DatasetFormatError(path, f"not a readable xz-compressed .npz (truncated or corrupt?): {err}") from err
        arrays = read_npz(raw, ("x", "y"), name=path)
        x = check_images(arrays["x"], str(path), "x", side=side)
        xs.append(x)
        ys.append(check_labels(arrays["y"], str(path), "y", count=x.shape[0], num_classes=num_classes))
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
    x = check_images(read_npy(root / names[0], "images"), str(root / names[0]), "images", side=CIFAR_SHAPE)
    y = check_labels(read_npy(root / names[1], "labels"), str(root / names[1]), "labels", count=x.shape[0],
                     num_classes=10)  # fmt: skip
    return ArrayDataset(f"cifar10.1-{version}", torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y), 10)


#: CIFAR-10.2 (Lu et al. 2020) as published: one archive holding the test set.
CIFAR10_2_FILE = "cifar102_test.npz"


def read_cifar10_2(root: str | Path, split: str = "test") -> ArrayDataset:
    """CIFAR-10.2 (test only): ``root/cifar102_test.npz`` with ``images`` uint8 ``(N, 32, 32, 3)``
    and ``labels`` ``(N,)``, as published (2,000 images)."""
    _split_check("cifar10.2", split, ("test",))
    path = Path(root) / CIFAR10_2_FILE
    if not path.is_file():
        raise DatasetNotFoundError("cifar10.2", root, [CIFAR10_2_FILE])
    arrays = read_npz(path, ("images", "labels"))
    images = check_images(arrays["images"], str(path), "images", side=CIFAR_SHAPE)
    labels = check_labels(arrays["labels"], str(path), "labels", count=images.shape[0], num_classes=10)
    return ArrayDataset("cifar10.2-test", torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels), 10)
