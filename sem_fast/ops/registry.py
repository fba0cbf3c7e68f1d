"""Backend registry: which implementation runs each fused op, for a device and an input.

A backend provides ``mix_images(images, draw, cfg, augment) -> (x_clean, x_mix)`` and
``sem_loss(logits, z_mix, z_clean, labels, draw, cfg) -> (loss, ce, sem)`` with exactly the
semantics of `sem_fast.reference`, as *unchecked* entry points (`sem_fast.ops.functional` and
`fused_sem_step` check every argument once before calling them):

- ``'reference'``: plain PyTorch (`sem_fast.reference`), any device and dtype; the specification.
- ``'triton'``: Triton kernels (`sem_fast.ops.triton`), on CUDA; on CPU only in Triton's
  interpreter (tests).
- ``'native'``: the kernels of ``csrc/`` (`sem_fast.ops.native`): C++ on CPUs, CUDA on GPUs.
- ``'auto'``: per device the first of `AUTO_ORDER` that runs there *and* takes the input (e.g.
  float64, uint8 images with more than 16 channels on ``'native'``, or a ``draw.lam`` that
  requires grad fall through to the reference).

``'cuda'`` is a deprecated alias of ``'native'`` (`sem_fast.config.canonical_backend`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import NamedTuple

import torch

from sem_fast import reference
from sem_fast.config import canonical_backend


class OpBackend(NamedTuple):
    """One implementation of the two fused ops.

    Attributes:
        name: the ``SEMConfig.backend`` name.
        mix_images, sem_loss: unchecked entry points with the reference's signatures.
        unsupported_input: ``(*tensors) -> str | None``, why the backend cannot take these
            images or features (None when it can).
        differentiates_lam: whether gradients reach ``draw.lam``. The kernel backends share the
            autograd of `sem_fast.ops.schema`, which takes lambda as a constant.
    """

    name: str
    mix_images: Callable[..., tuple[torch.Tensor, torch.Tensor]]
    sem_loss: Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    unsupported_input: Callable[..., str | None]
    differentiates_lam: bool


def _reference() -> OpBackend:
    return OpBackend("reference", reference.mix_images, reference.sem_loss, lambda *tensors: None, True)


def _triton() -> OpBackend:
    # Import statements, not importlib: torch.compile can trace an import statement, so a step
    # compiled before any eager call still loads its backend.
    from sem_fast.ops import triton as backend  # imports Triton and registers its kernels

    return OpBackend("triton", backend.mix_images, backend.sem_loss, backend.unsupported_input, False)


def _native() -> OpBackend:
    from sem_fast.ops import native as backend  # loads the compiled extension sem_fast._C

    return OpBackend("native", backend.mix_images, backend.sem_loss, backend.unsupported_input, False)


def _probe_triton(device_type: str) -> str | None:
    try:
        import triton  # noqa: F401
    except ImportError as e:
        return f"triton cannot be imported ({e})"
    if device_type == "cuda" or (device_type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1"):
        return None
    if device_type == "cpu":
        return "Triton runs on CPU only in its interpreter: set TRITON_INTERPRET=1 before importing sem_fast"
    return f"Triton has no {device_type} support"


def _probe_native(device_type: str) -> str | None:
    from sem_fast.ops import native  # loads the compiled extension sem_fast._C on first use

    return native.probe(device_type)


#: name -> (loader of its `OpBackend`, probe: None if it runs on a device type, else why not).
_REGISTRY: dict[str, tuple[Callable[[], OpBackend], Callable[[str], str | None]]] = {
    "reference": (_reference, lambda device_type: None),
    "triton": (_triton, _probe_triton),
    "native": (_native, _probe_native),
}

#: ``'auto'``'s preference per device type, fastest first. On CUDA Triton goes first until both
#: fast backends have been timed on one GPU; on CPU the C++ kernels beat the reference
#: (benchmarks/RESULTS.md) and the Triton interpreter is for tests only.
AUTO_ORDER: dict[str, tuple[str, ...]] = {
    "cuda": ("triton", "native", "reference"),
    "cpu": ("native", "reference"),
}
NAMES: tuple[str, ...] = (*_REGISTRY, "auto")

_LOADED: dict[str, OpBackend] = {}


def _load(name: str) -> OpBackend:
    if name not in _LOADED:
        _LOADED[name] = _REGISTRY[name][0]()
    return _LOADED[name]


def available_backends(device: torch.device | str = "cpu") -> dict[str, str | None]:
    """For each backend: ``None`` if it can run on ``device``, else the reason it cannot."""
    device_type = torch.device(device).type
    return {name: probe(device_type) for name, (_, probe) in _REGISTRY.items()}


def _unsupported(backend: OpBackend, inputs: tuple[torch.Tensor | None, ...], lam: torch.Tensor | None) -> str | None:
    """Why ``backend`` cannot take ``inputs`` and ``lam``, or None."""
    if lam is not None and lam.requires_grad and not backend.differentiates_lam:
        return "draw.lam requires grad, but these kernels take lambda as a constant (no gradient reaches it)"
    return backend.unsupported_input(*inputs)


def get_backend(
    name: str, device: torch.device | str, *inputs: torch.Tensor | None, lam: torch.Tensor | None = None
) -> OpBackend:
    """The backend ``name`` for ``device`` that takes ``inputs`` (the images, or the logits and
    features) and ``lam`` (``draw.lam``: one that requires grad needs the reference): for
    ``'auto'``, the first of `AUTO_ORDER` that runs there and takes them.

    Raises ``ValueError`` naming the reason when a named backend cannot run there or cannot take
    the inputs.
    """
    name = canonical_backend(name)
    device_type = torch.device(device).type
    if name == "auto":
        for candidate in AUTO_ORDER.get(device_type, ("reference",)):
            if _REGISTRY[candidate][1](device_type) is None:
                backend = _load(candidate)
                if _unsupported(backend, inputs, lam) is None:
                    return backend
        return _load("reference")
    if name not in _REGISTRY:
        raise ValueError(f"backend must be one of {list(NAMES)}, got {name!r}")
    reason = _REGISTRY[name][1](device_type)
    if reason is not None:
        raise ValueError(f"backend={name!r} cannot run on {device_type}: {reason}")
    backend = _load(name)
    reason = _unsupported(backend, inputs, lam)
    if reason is not None:
        raise ValueError(f"backend={name!r} cannot take this input: {reason}; use backend='auto' or 'reference'")
    return backend
