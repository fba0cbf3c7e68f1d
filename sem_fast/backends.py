"""Backend registry: which implementation of the two fused ops runs a step.

A backend provides ``mix_images(images, draw, cfg) -> (x_clean, x_mix)`` and
``sem_loss(logits, z_mix, z_clean, labels, draw, cfg) -> (loss, ce, sem)`` with exactly the
semantics of `sem_fast.reference`. The registry holds their *unchecked* entry points:
`fused_sem_step` checks every argument once (`sem_fast._checks`) before calling them. ``'reference'`` is always available; the fast backends register
themselves here with a probe that says whether they can run on a device, and why not.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import NamedTuple

import torch

from sem_fast import reference


class Backend(NamedTuple):
    """One implementation of the mix op and the loss op (unchecked entry points)."""

    name: str
    mix_images: Callable[..., tuple[torch.Tensor, torch.Tensor]]
    sem_loss: Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


#: name -> (loader returning the Backend, probe returning None if it runs on a device type, else why not)
_REGISTRY: dict[str, tuple[Callable[[], Backend], Callable[[str], str | None]]] = {
    "reference": (
        lambda: Backend("reference", reference.mix_images_unchecked, reference.sem_loss_unchecked),
        lambda device_type: None,
    ),
}
#: Preference of backend='auto' per device type, fastest first; 'reference' always ends it.
_AUTO_ORDER: dict[str, tuple[str, ...]] = {}


def register_backend(
    name: str,
    load: Callable[[], Backend],
    probe: Callable[[str], str | None],
    auto_for: dict[str, int] | None = None,
) -> None:
    """Register backend ``name``; ``auto_for`` maps device types to its rank in 'auto' (0 first)."""
    _REGISTRY[name] = (load, probe)
    for device_type, rank in (auto_for or {}).items():
        order = list(_AUTO_ORDER.get(device_type, ()))
        order.insert(min(rank, len(order)), name)
        _AUTO_ORDER[device_type] = tuple(order)


def available_backends(device: torch.device | str = "cpu") -> dict[str, str | None]:
    """For each backend: ``None`` if it can run on ``device``, else the reason it cannot."""
    device_type = torch.device(device).type
    return {name: probe(device_type) for name, (_, probe) in _REGISTRY.items()}


def get_backend(name: str, device: torch.device | str) -> Backend:
    """The backend ``name`` (or the fastest available one for ``'auto'``) for ``device``.

    Raises ``ValueError`` naming the reason when the requested backend cannot run there.
    """
    device_type = torch.device(device).type
    if name == "auto":
        for candidate in _AUTO_ORDER.get(device_type, ()):
            if _REGISTRY[candidate][1](device_type) is None:
                return _REGISTRY[candidate][0]()
        return _REGISTRY["reference"][0]()
    if name not in _REGISTRY:
        raise ValueError(f"backend must be one of {sorted(_REGISTRY) + ['auto']}, got {name!r}")
    load, probe = _REGISTRY[name]
    reason = probe(device_type)
    if reason is not None:
        raise ValueError(f"backend={name!r} cannot run on {device_type}: {reason}")
    return load()


def _load_triton() -> Backend:
    from sem_fast.ops import mix, sem_loss  # imports Triton and registers the sem_fast:: custom ops

    return Backend("triton", mix.mix_images_unchecked, sem_loss.sem_loss_unchecked)


def _probe_triton(device_type: str) -> str | None:
    try:
        import triton  # noqa: F401
    except ImportError as e:
        return f"triton cannot be imported ({e})"
    if device_type == "cuda" or (device_type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1"):
        return None
    if device_type == "cpu":
        return "Triton runs on CPU only in its interpreter: set TRITON_INTERPRET=1 before importing sem_fast.ops"
    return f"Triton has no {device_type} support"


register_backend("triton", load=_load_triton, probe=_probe_triton, auto_for={"cuda": 0})


def _load_ext() -> Backend:
    from sem_fast import ext  # loads the compiled extension sem_fast._C (csrc/, built by setup.py)

    return Backend("cuda", ext.mix_images_unchecked, ext.sem_loss_unchecked)


def _probe_ext(device_type: str) -> str | None:
    from sem_fast import ext

    return ext.probe(device_type)


# 'cuda' is the compiled extension: CUDA kernels on GPUs, C++ kernels on CPU (faster than the
# reference there: benchmarks/RESULTS.md), after Triton on GPUs until measured there.
register_backend("cuda", load=_load_ext, probe=_probe_ext, auto_for={"cuda": 1, "cpu": 0})
