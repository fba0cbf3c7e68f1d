"""The ``backend`` fixture of the fused-op equivalence suites: every fast backend on every device
this machine has, skipped (with the registry's reason) where it cannot run."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import NamedTuple

import pytest
import torch

from sem_fast import available_backends
from sem_fast.backends import get_backend

#: Backend name -> modules holding its public (argument-checking) ``mix_images`` and ``sem_loss``.
PUBLIC_MODULES = {"triton": ("sem_fast.ops.mix", "sem_fast.ops.sem_loss"), "cuda": ("sem_fast.ext", "sem_fast.ext")}
DEVICES = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


class FastBackend(NamedTuple):
    """One fast backend on one device: its public ops (reference signatures, checked arguments)
    and the unchecked entry points the registry hands to `fused_sem_step`."""

    name: str
    device: torch.device
    mix_images: Callable
    sem_loss: Callable
    mix_images_unchecked: Callable
    sem_loss_unchecked: Callable


@pytest.fixture(
    scope="session",
    params=[(name, device) for name in PUBLIC_MODULES for device in DEVICES],
    ids=lambda param: "-".join(param),
)
def backend(request) -> FastBackend:
    name, device = request.param
    reason = available_backends(device)[name]
    if reason is not None:
        pytest.skip(reason)
    mix_module, loss_module = (importlib.import_module(module) for module in PUBLIC_MODULES[name])
    unchecked = get_backend(name, device)
    return FastBackend(
        name,
        torch.device(device),
        mix_module.mix_images,
        loss_module.sem_loss,
        unchecked.mix_images,
        unchecked.sem_loss,
    )
