"""The Triton backend (``backend='triton'``): the fused ops as Triton kernels, on CUDA, and on CPU in
Triton's interpreter (``TRITON_INTERPRET=1``, for tests).

Importing it imports Triton and registers the kernels of the ``sem_fast_triton`` ops (`mix`,
`loss`; schemas, fakes and autograd: `sem_fast.ops.schema`). Its entry points `mix_images`
and `sem_loss` have the reference's signatures and check nothing: `sem_fast.ops.functional` does.
"""

from __future__ import annotations

import torch

from sem_fast.ops import schema
from sem_fast.ops.triton import loss, mix  # noqa: F401 - registers the kernels

_OPS = schema.FusedOps(schema.TRITON)
mix_images = _OPS.mix_images
sem_loss = _OPS.sem_loss


def unsupported_input(*tensors: torch.Tensor | None) -> str | None:
    """Why the Triton kernels cannot take these images/features (float64), else None."""
    if any(t is not None and t.dtype == torch.float64 for t in tensors):
        return "the Triton kernels take uint8, float32, bfloat16 and float16, not float64"
    return None
