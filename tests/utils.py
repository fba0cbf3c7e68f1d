"""Helpers shared by the tests: seeding, comparisons, tiny models, the torchvision import shim."""

from __future__ import annotations

import random

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
    ``classify``: linear ``width -> num_classes``. ``calls`` records, per ``encode`` call,
    whether grad mode was on.
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.encode(x))
