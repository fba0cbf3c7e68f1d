"""Image-file datasets: ImageFolder trees and Tiny-ImageNet, listed as paths + labels, and the
Pillow decoder (with optional random-resized-crop + flip) used by the ``cpu`` backend.

ImageFolder layout: ``root/<split>/<class>/**/<image>.{jpg,jpeg,png}`` (extensions in any case);
classes are the sorted subfolder names of ``root/train`` when it exists (so every split shares
the training label indices), else of ``root/<split>``. Tiny-ImageNet layout, as published:
``tiny-imagenet-200/wnids.txt``, ``train/<wnid>/images/*.JPEG``, ``val/images/*.JPEG`` with
``val/val_annotations.txt`` (``file<TAB>wnid<TAB>box``); classes are the sorted wnids (the order
torchvision's ImageFolder gives the train folder).
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from sem_fast.data.datasets import ArrayDataset, FileDataset
from sem_fast.data.errors import DatasetFormatError, DatasetNotFoundError
from sem_fast.extras import require

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
# torchvision's RandomResizedCrop defaults: area fraction and aspect-ratio range, attempts.
RRC_SCALE = (0.08, 1.0)
RRC_RATIO = (3 / 4, 4 / 3)
RRC_ATTEMPTS = 10


def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def list_image_folder(root: str | Path, split: str) -> FileDataset:
    """The files of ``root/<split>/<class>/...`` with labels indexing the sorted class names."""
    root = Path(root)
    folder = root / split
    if not folder.is_dir():
        raise DatasetNotFoundError("imagefolder", root, [f"{split}/<class>/<image>.jpg|.png"])
    class_root = root / "train" if (root / "train").is_dir() else folder
    classes = sorted(p.name for p in class_root.iterdir() if p.is_dir())
    found = sorted(p.name for p in folder.iterdir() if p.is_dir())
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise DatasetFormatError(folder, f"class folders {unknown} are not in {class_root}'s classes")
    files, labels = [], []
    for name in found:
        images = _images_under(folder / name)
        if not images:
            raise DatasetFormatError(folder / name, f"class folder holds no {'/'.join(IMAGE_EXTENSIONS)} files")
        files += [str(p) for p in images]
        labels += [classes.index(name)] * len(images)
    if not files:
        raise DatasetNotFoundError("imagefolder", root, [f"{split}/<class>/<image>.jpg|.png"])
    return FileDataset(f"imagefolder-{split}", tuple(files), torch.tensor(labels, dtype=torch.int64), tuple(classes))


def list_tiny_imagenet(root: str | Path, split: str) -> FileDataset:
    """Tiny-ImageNet ``split`` ('train' or 'val'; the test split has no labels)."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val' for tiny-imagenet, got {split!r}")
    root = Path(root)
    base = root if (root / "wnids.txt").is_file() else root / "tiny-imagenet-200"
    expected = ["tiny-imagenet-200/wnids.txt",
                "tiny-imagenet-200/train/<wnid>/images/*.JPEG" if split == "train"
                else "tiny-imagenet-200/val/val_annotations.txt and val/images/*.JPEG"]
    if not (base / "wnids.txt").is_file() or not (base / split).is_dir():
        raise DatasetNotFoundError("tiny-imagenet", root, expected)
    classes = sorted(line.strip() for line in (base / "wnids.txt").read_text().splitlines() if line.strip())
    index = {wnid: i for i, wnid in enumerate(classes)}
    if split == "train":
        pairs = [(p, wnid) for wnid in classes for p in _images_under(base / "train" / wnid / "images")]
    else:
        pairs = _val_pairs(base / "val")
    for path, wnid in pairs:
        if wnid not in index:
            raise DatasetFormatError(path, f"class {wnid!r} is not listed in {base / 'wnids.txt'}")
        if not path.is_file():
            raise DatasetNotFoundError("tiny-imagenet", root, [str(path.relative_to(root))])
    if not pairs:
        raise DatasetNotFoundError("tiny-imagenet", root, expected)
    return FileDataset(f"tiny-imagenet-{split}", tuple(str(p) for p, _ in pairs),
                       torch.tensor([index[w] for _, w in pairs], dtype=torch.int64), tuple(classes))


def _val_pairs(val: Path) -> list[tuple[Path, str]]:
    annotations = val / "val_annotations.txt"
    if not annotations.is_file():
        raise DatasetNotFoundError("tiny-imagenet", val, ["val_annotations.txt"])
    pairs = []
    for number, line in enumerate(annotations.read_text().splitlines(), 1):
        fields = line.split("\t")
        if len(fields) < 2:
            raise DatasetFormatError(annotations, f"line {number} must be 'file<TAB>wnid<TAB>...', got {line!r}")
        pairs.append((val / "images" / fields[0], fields[1]))
    return pairs


def _pillow():
    require("PIL", "decoding image files on the cpu loader")
    from PIL import Image

    return Image


def decode_image(path: str, size: int | None, rng: np.random.Generator | None = None) -> np.ndarray:
    """Decode ``path`` to uint8 ``(H, W, 3)`` RGB with Pillow.

    ``size``: resize to ``(size, size)`` (bilinear; skipped when already that size); None keeps
    the image's size. ``rng``: random-resized-crop (torchvision's default ranges) to
    ``(size, size)`` then a horizontal flip with probability 1/2, drawn from ``rng``.
    """
    image_module = _pillow()
    try:
        with image_module.open(path) as image:
            image = image.convert("RGB")
    except Exception as err:  # noqa: BLE001 - Pillow raises OSError, SyntaxError, ValueError, ... on corrupt files
        raise DatasetFormatError(path, f"cannot decode image (truncated or not a JPEG/PNG?): "
                                       f"{type(err).__name__}: {err}") from None  # fmt: skip
    if rng is not None:
        box = _random_resized_crop_box(image.width, image.height, rng)
        image = image.resize((size, size), image_module.BILINEAR, box=box)
        if rng.random() < 0.5:
            image = image.transpose(image_module.FLIP_LEFT_RIGHT)
    elif size is not None and image.size != (size, size):
        image = image.resize((size, size), image_module.BILINEAR)
    return np.asarray(image)


def _random_resized_crop_box(width: int, height: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """``(left, top, right, bottom)`` of a crop covering a random area fraction in `RRC_SCALE` with
    a log-uniform aspect ratio in `RRC_RATIO`; after `RRC_ATTEMPTS` misses, the largest central
    crop with the ratio clamped to the range (torchvision's RandomResizedCrop)."""
    area = width * height
    for _ in range(RRC_ATTEMPTS):
        target = area * rng.uniform(*RRC_SCALE)
        ratio = math.exp(rng.uniform(math.log(RRC_RATIO[0]), math.log(RRC_RATIO[1])))
        w, h = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
            return left, top, left + w, top + h
    ratio = min(max(width / height, RRC_RATIO[0]), RRC_RATIO[1])
    w, h = (width, round(width / ratio)) if width / height < ratio else (round(height * ratio), height)
    w, h = min(w, width), min(h, height)
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def check_image_options(image_size: object, augment: object) -> None:
    """``image_size`` a positive int or None; ``augment`` a bool that needs an ``image_size``."""
    if image_size is not None and (not isinstance(image_size, int) or isinstance(image_size, bool) or image_size <= 0):
        raise ValueError(f"image_size must be a positive int or None, got {image_size!r}")
    if not isinstance(augment, bool):
        raise TypeError(f"augment must be a bool, got {augment!r}")
    if augment and image_size is None:
        raise ValueError("augment=True (random-resized-crop + flip) needs image_size, the side of the output crop")


def decode_file_dataset(dataset: FileDataset, image_size: int | None, num_threads: int) -> ArrayDataset:
    """All of ``dataset`` decoded with Pillow into an `ArrayDataset` (for the resident loader);
    images are resized to ``image_size`` or must all share one size."""
    with ThreadPoolExecutor(num_threads) as pool:
        images = list(pool.map(lambda path: decode_image(path, image_size), dataset.files))
    for image, path in zip(images, dataset.files):
        if image.shape != images[0].shape:
            raise DatasetFormatError(path, f"image is {image.shape[1]}x{image.shape[0]} but {dataset.files[0]} is "
                                           f"{images[0].shape[1]}x{images[0].shape[0]}; pass image_size")
    return ArrayDataset(dataset.name, torch.from_numpy(np.stack(images)), dataset.labels, dataset.num_classes)
