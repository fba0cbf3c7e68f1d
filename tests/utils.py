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
