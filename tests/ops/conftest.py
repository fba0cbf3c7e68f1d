"""The ``backend`` fixture of the fused-op equivalence suites: every fast backend on every device
this machine has, skipped (with the registry's reason) where it cannot run."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

import sem_fast
from sem_fast import SEMConfig, available_backends
from sem_fast.ops.registry import get_backend
from sem_fast.ops.schema import NAMESPACES

DEVICES = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


class FastBackend:
    """One fast backend on one device: the public ops with ``cfg.backend`` set to it (checked
    arguments, reference signatures), the registry's unchecked entry points, and its raw ops
    (``torch.ops.<namespace>``)."""

    def __init__(self, name: str, device: str) -> None:
        self.name = name
        self.device = torch.device(device)
        unchecked = get_backend(name, device)
        self.mix_images_unchecked: Callable = unchecked.mix_images
        self.sem_loss_unchecked: Callable = unchecked.sem_loss
        self.ops = getattr(torch.ops, NAMESPACES[name])

    def _cfg(self, cfg):
        return cfg.replace(backend=self.name) if isinstance(cfg, SEMConfig) else cfg

    def mix_images(self, images, draw, cfg, *, augment=None):
        return sem_fast.mix_images(images, draw, self._cfg(cfg), augment=augment)

    def sem_loss(self, logits, z_mix, z_clean, labels, draw, cfg):
        return sem_fast.sem_loss(logits, z_mix, z_clean, labels, draw, self._cfg(cfg))


@pytest.fixture(
    scope="session",
    params=[(name, device) for name in NAMESPACES for device in DEVICES],
    ids=lambda param: "-".join(param),
)
def backend(request) -> FastBackend:
    name, device = request.param
    reason = available_backends(device)[name]
    if reason is not None:
        pytest.skip(reason)
    return FastBackend(name, device)
