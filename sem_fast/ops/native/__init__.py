"""The native backend (``backend='native'``): the fused ops as C++ kernels on CPUs and CUDA kernels on GPUs.

The kernels live in ``csrc/`` and are built by ``setup.py`` into ``sem_fast._C``, which registers
them (``TORCH_LIBRARY_IMPL``) into the ``sem_fast_native`` ops that `sem_fast.ops.schema` defines
with their fake kernels and autograd (the dispatcher checks the C++ signatures against those
schemas when the library loads). This module defines the namespace first, loads the library, and
says why the backend cannot run where it cannot (`probe`). Its entry points `mix_images` and
`sem_loss` have the reference's signatures and check nothing: `sem_fast.ops.functional` does.
Without the built extension it still imports, and `probe` says how to build it.
"""

from __future__ import annotations

import importlib

import torch

from sem_fast.ops import schema

#: The most channels of a uint8 batch: the normalization constants travel in the kernels'
#: argument struct (csrc/sem_math.h: kMaxNormChannels).
MAX_UINT8_CHANNELS = 16

BUILD_HINT = (
    "build it from the repository root with `pip install --no-deps --no-build-isolation -e .` "
    "(needs a C++ compiler; the CUDA kernels also need a CUDA build of torch and nvcc on CUDA_HOME; "
    "SEM_FAST_NO_EXT must be unset, SEM_FAST_REQUIRE_EXT=1 shows why a build fails)"
)


def _load_library() -> str | None:
    """Load ``sem_fast._C``; ``None`` on success, else why it cannot be used."""
    try:
        importlib.import_module("sem_fast._C")
    except (ImportError, OSError) as error:
        return f"the compiled extension sem_fast._C is not available ({error}); {BUILD_HINT}"
    return None


_LOAD_ERROR = _load_library()
#: Whether the library holds CUDA kernels (read once here: probing the dispatcher inside a
#: function that torch.compile traces would break the graph).
_HAS_CUDA_KERNELS = _LOAD_ERROR is None and torch._C._dispatch_has_kernel_for_dispatch_key(
    f"{schema.NATIVE}::mix_images", "CUDA"
)


def probe(device_type: str) -> str | None:
    """``None`` if the native kernels run on ``device_type``, else the reason they do not."""
    if _LOAD_ERROR is not None:
        return _LOAD_ERROR
    if device_type == "cpu" or (device_type == "cuda" and _HAS_CUDA_KERNELS):
        return None
    if device_type == "cuda":
        return (
            "sem_fast._C was built without CUDA kernels (torch had no CUDA or nvcc was not found at "
            f"build time); {BUILD_HINT}"
        )
    return f"the native kernels exist for cpu and cuda only, not {device_type}"


def unsupported_input(*tensors: torch.Tensor | None) -> str | None:
    """Why the native kernels cannot take these images/features (float64, or uint8 images with more
    than `MAX_UINT8_CHANNELS` channels), else None."""
    for t in tensors:
        if t is None:
            continue
        if t.dtype == torch.float64:
            return "the native kernels take uint8, float32, bfloat16 and float16, not float64"
        if t.dtype == torch.uint8 and t.dim() == 4 and t.shape[-1] > MAX_UINT8_CHANNELS:
            return f"the native kernels take uint8 images of at most {MAX_UINT8_CHANNELS} channels, got {t.shape[-1]}"
    return None


_OPS = schema.FusedOps(schema.NATIVE)
mix_images = _OPS.mix_images
sem_loss = _OPS.sem_loss
