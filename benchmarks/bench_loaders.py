"""Loader throughput: images per second over one epoch of CIFAR-size 32x32 images, per backend.

Arrays (the bundled CIFAR-10 train subset; on CUDA tiled 16x to 48,000 images, about CIFAR-10's
50,000, since the full set is not shipped):
- ``resident`` / ``cpu`` / ``dali``: `make_loader`'s backends, raw uint8 batches on the device;
- ``resident + crop/flip``: the resident batches plus a per-sample padded crop and flip on the
  device with plain torch ops (`sem_fast.reference.augment_images`), the CIFAR train transforms
  that the fused mix op otherwise does in its one pass;
- ``torchvision DataLoader``: what the mixup papers use: a map-style dataset of PIL images with
  ``RandomCrop(32, padding=4)`` + ``RandomHorizontalFlip`` + ``PILToTensor``, workers on CUDA.
JPEG files (the same images written as an ImageFolder tree): ``cpu`` (Pillow) and ``dali``
(nvJPEG on CUDA), each with and without random-resized-crop + flip.

Each case first checks its first batch against the dataset rows (or Pillow's decode of the files)
that the epoch order says it holds, then times whole epochs. On CUDA the ``resident`` rows must not
synchronize with the host (the harness checks); the others feed the device from the host by design.

    pytest benchmarks/bench_loaders.py --benchmark-only
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from benchmarks.harness import device, measure
from sem_fast import SEMConfig
from sem_fast.data import ArrayDataset, dali_available, load_dataset, loader_from_dataset
from sem_fast.data.epochs import epoch_order
from sem_fast.data.image_folder import decode_image
from sem_fast.extras import import_torchvision
from sem_fast.reference import augment_images
from sem_fast.sampling import sample_augment
from tests.utils import write_image_folder

DEV = device()
ON_CUDA = DEV.type == "cuda"
BATCH = 512 if ON_CUDA else 256
TILES = 16 if ON_CUDA else 1  # 16 x 3,000 bundled images = 48,000, about CIFAR-10's training set
JPEG_FILES = 3000 if ON_CUDA else 256
WORKERS = min(8, os.cpu_count() or 1) if ON_CUDA else 0  # DataLoader workers; none on CPU smoke runs
JPEG_ATOL = 2  # DALI's and Pillow's JPEG decoders may round the IDCT differently (0 measured on CPU)
SEED = 0
EPOCH_ROUNDS = 5  # timed rounds of one whole epoch each (many steps per round, so few rounds suffice)
ARRAY_BACKENDS = ["resident", "cpu"] + (["dali"] if dali_available() else [])
FILE_BACKENDS = ["cpu"] + (["dali"] if dali_available() else [])
AUGMENT = SEMConfig(crop_padding=4, hflip=True)


@pytest.fixture(scope="module")
def cifar() -> ArrayDataset:
    data = load_dataset("cifar10-bundled", None, "train")
    return ArrayDataset("cifar10-bundled-x16" if TILES > 1 else data.name, data.images.repeat(TILES, 1, 1, 1),
                        data.labels.repeat(TILES), 10)


@pytest.fixture(scope="module")
def jpeg_root(cifar, tmp_path_factory):
    root = tmp_path_factory.mktemp("jpeg_tree")
    images, labels = cifar.images[:JPEG_FILES].numpy(), cifar.labels[:JPEG_FILES].numpy()
    write_image_folder(root / "train", {f"c{c}": list(images[labels == c]) for c in range(10)}, ext=".jpg")
    return root


def run_epoch(loader, transform=None) -> None:
    for images, _ in loader:
        if transform is not None:
            transform(images)


def device_crop_flip(images: torch.Tensor) -> torch.Tensor:
    draw = sample_augment(images.shape[0], AUGMENT, device=images.device)
    return augment_images(images.permute(0, 3, 1, 2).float(), draw, AUGMENT)


def check_first_batch(loader, expected_images: torch.Tensor | None, expected_labels: torch.Tensor,
                      atol: int = 0) -> None:
    """The correctness gate: the next epoch's first batch holds the rows its epoch order names
    (labels only, and the output shape, when ``expected_images`` is None: augmented images)."""
    perm_device = loader.device if loader.backend == "resident" else torch.device("cpu")
    order = epoch_order(loader.dataset_size, loader.epoch, loader.seed, loader.shuffle, perm_device).cpu()
    images, labels = next(iter(loader))
    index = order[: loader.batch_size]
    assert images.dtype == torch.uint8 and images.device == loader.device and images.shape[0] == len(index)
    if expected_images is not None:
        assert (images.cpu().int() - expected_images[index].int()).abs().max() <= atol, "first batch: wrong images"
    assert torch.equal(labels.cpu(), expected_labels[index]), "first batch: wrong labels"


@pytest.mark.parametrize("provider", ARRAY_BACKENDS + ["resident + crop/flip"])
def test_array_loader_throughput(benchmark, cifar, provider):
    backend = provider.split(" ")[0]
    loader = loader_from_dataset(cifar, BATCH, DEV, backend, shuffle=True, seed=SEED, drop_last=True)
    check_first_batch(loader, cifar.images, cifar.labels)
    transform = device_crop_flip if provider.endswith("crop/flip") else None
    measure(benchmark, lambda: run_epoch(loader, transform), dev=DEV, group="loader arrays",
            case=f"{len(cifar)} imgs B={BATCH}", provider=provider, items=loader.num_samples, calls=1,
            rounds=EPOCH_ROUNDS, host_syncs=backend != "resident")


def test_torchvision_dataloader_throughput(benchmark, cifar):
    tv = import_torchvision("the torchvision DataLoader row")
    from PIL import Image

    transform = tv.transforms.Compose([tv.transforms.RandomCrop(32, padding=4), tv.transforms.RandomHorizontalFlip(),
                                       tv.transforms.PILToTensor()])

    class PILArrays(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(cifar)

        def __getitem__(self, i: int):
            return transform(Image.fromarray(cifar.images[i].numpy())), cifar.labels[i]

    loader = torch.utils.data.DataLoader(PILArrays(), BATCH, shuffle=True, num_workers=WORKERS, drop_last=True,
                                         pin_memory=ON_CUDA, persistent_workers=WORKERS > 0)
    images, labels = next(iter(loader))
    assert images.shape == (BATCH, 3, 32, 32) and images.dtype == torch.uint8 and labels.dtype == torch.int64

    def epoch() -> None:
        for images, labels in loader:
            images.to(DEV, non_blocking=True), labels.to(DEV, non_blocking=True)

    measure(benchmark, epoch, dev=DEV, group="loader arrays", case=f"{len(cifar)} imgs B={BATCH}",
            provider="torchvision DataLoader", items=len(loader) * BATCH, calls=1, rounds=EPOCH_ROUNDS,
            host_syncs=True)


@pytest.mark.parametrize("augment", [False, True])
@pytest.mark.parametrize("backend", FILE_BACKENDS)
def test_jpeg_loader_throughput(benchmark, jpeg_root, backend, augment):
    files = load_dataset("imagefolder", jpeg_root, "train")
    batch = min(BATCH, len(files))
    loader = loader_from_dataset(files, batch, DEV, backend, shuffle=True, seed=SEED, drop_last=True,
                                 augment=augment, image_size=32 if augment else None)
    decoded = None if augment else torch.from_numpy(np.stack([decode_image(f, None) for f in files.files]))
    check_first_batch(loader, decoded, files.labels, atol=JPEG_ATOL)
    measure(benchmark, lambda: run_epoch(loader), dev=DEV, group="loader jpeg",
            case=f"{len(files)} files B={batch}" + (" rrc+flip" if augment else ""), provider=backend,
            items=loader.num_samples, calls=1, rounds=EPOCH_ROUNDS, host_syncs=True)
