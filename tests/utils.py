"""Helpers shared by the tests: seeding, comparisons, launch counters, tiny models, the torchvision
import shim, data helpers."""

from __future__ import annotations

import contextlib
import hashlib
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch


def set_seed(seed: int = 0) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, *, atol: float, rtol: float, name: str = "") -> None:
    """``torch.testing.assert_close`` in float32 with a message naming the compared quantity."""
    torch.testing.assert_close(
        actual.float(), expected.float(), atol=atol, rtol=rtol, msg=lambda m: f"{name}: {m}" if name else m
    )


def assert_low_precision_close(
    fast: torch.Tensor, truth: torch.Tensor, plain: torch.Tensor, *, atol: float, name: str = ""
) -> None:
    """flash-attention's rule for bf16/fp16: ``max|fast - truth| <= 2 * max|plain - truth| + atol``,
    with ``truth`` the float32 reference on the same (rounded) inputs and ``plain`` the same
    computation done by plain PyTorch in the low precision. NaN anywhere fails."""
    assert fast.shape == truth.shape, f"{name}: shape {tuple(fast.shape)} != {tuple(truth.shape)}"
    err = (fast.float() - truth.float()).abs().max().item()
    plain_err = (plain.float() - truth.float()).abs().max().item()
    assert err <= 2 * plain_err + atol, (
        f"{name}: fast-path error {err:.3g} > 2 x plain low-precision error {plain_err:.3g} + {atol:g}"
    )


@contextlib.contextmanager
def triton_launches() -> Iterator[Counter]:
    """Count the Triton kernel launches (``kernel[grid](...)``) inside the block, by kernel name,
    in Triton's CPU interpreter as on a GPU: ``with triton_launches() as launches: ...``."""
    from triton.runtime.jit import KernelInterface

    launches: Counter = Counter()
    original = KernelInterface.__getitem__

    def counted_getitem(kernel, grid):
        launcher = original(kernel, grid)

        def counted(*args, **kwargs):
            launches[kernel.fn.__name__] += 1
            return launcher(*args, **kwargs)

        return counted

    KernelInterface.__getitem__ = counted_getitem
    try:
        yield launches
    finally:
        KernelInterface.__getitem__ = original


def cuda_launches(fn) -> Counter:
    """Run ``fn()`` once under the profiler and count the CUDA kernels, memsets and copies it put
    on the GPU, by name (needs a GPU)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return Counter(e.name for e in prof.events() if e.device_type == DeviceType.CUDA)


def import_torchvision():
    """Import torchvision; its PyPI wheel is a CUDA build that imports on CPU-only torch only
    after the ``torchvision::nms``/``qnms`` schemas exist (test-only shim; no kernels used)."""
    if not hasattr(torch.ops, "torchvision") or not hasattr(torch.ops.torchvision, "nms"):
        try:
            import torchvision  # noqa: F401
        except (RuntimeError, ImportError):
            _define_torchvision_schemas()
    import torchvision

    return torchvision


_SHIM: list[torch.library.Library] = []


def _define_torchvision_schemas() -> None:
    if _SHIM:
        return
    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor")
    _SHIM.append(lib)


class TinyNet(torch.nn.Module):
    """A small conv net with the ``encode``/``classify`` split, counting its encode calls.

    ``encode``: conv3x3(C -> width) - BN - ReLU - global average pool -> ``(B, width)``;
    ``classify``: linear ``width -> num_classes``, which ``num_classes`` reports (as the models of
    `sem_fast.models` do). ``calls`` records, per ``encode`` call, whether grad mode was on.
    """

    def __init__(self, in_channels: int = 3, width: int = 8, num_classes: int = 10) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(in_channels, width, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(width)
        self.fc = torch.nn.Linear(width, num_classes)
        self.calls: list[bool] = []

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(torch.is_grad_enabled())
        return torch.relu(self.bn(self.conv(x))).mean((2, 3))

    def classify(self, z: torch.Tensor) -> torch.Tensor:
        return self.fc(z)

    @property
    def num_classes(self) -> int:
        return self.fc.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.encode(x))


# --- data loaders: sample identity, tiny image trees, the shared real data -----------------------


def sample_multiset(images: torch.Tensor, labels: torch.Tensor) -> Counter:
    """The multiset of ``(sha1 of one image's bytes, label)`` pairs: ``images (N, H, W, C)`` uint8 and
    ``labels (N,)`` on any device. Two epochs that visit the same samples with the same labels,
    in any order, have equal multisets."""
    images, labels = images.cpu().contiguous(), labels.cpu().tolist()
    return Counter((hashlib.sha1(image.numpy().tobytes()).digest(), label) for image, label in zip(images, labels))


def epoch_batches(loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of ``loader`` as a list of ``(images, labels)`` moved to the CPU."""
    return [(x.cpu(), y.cpu()) for x, y in loader]


def write_image_folder(root: Path, images: dict[str, list[np.ndarray]], ext: str = ".png") -> None:
    """Write ``images[class]`` (uint8 ``(H, W, 3)`` or ``(H, W)``) as ``root/<class>/<k><ext>`` with
    Pillow; JPEGs at Pillow's default quality (75)."""
    from PIL import Image

    for name, arrays in images.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for k, array in enumerate(arrays):
            Image.fromarray(array).save(root / name / f"{k}{ext}")


def mat_fixture_images() -> np.ndarray:
    """``X`` of the .mat fixtures in ``tests/data/fixtures``: uint8 ``(6, 5, 3, 7)`` (SVHN's
    ``(H, W, 3, N)`` layout) with ``X[h, w, c, n] = (31h + 17w + 5c + 3n) mod 256``."""
    h, w, c, n = np.meshgrid(np.arange(6), np.arange(5), np.arange(3), np.arange(7), indexing="ij")
    return ((h * 31 + w * 17 + c * 5 + n * 3) % 256).astype(np.uint8)


def shared_data_dir() -> Path | None:
    """The project's shared real-data folder (``<repo>/../shared/data``) when present, else None."""
    path = Path(__file__).resolve().parents[2] / "shared" / "data"
    return path if (path / "README.md").is_file() else None
