"""Helpers shared by the Triton fused ops: launch geometry, bf16 rounding, the inverse permutation,
kernel registration."""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
import triton
import triton.language as tl

from sem_fast.ops.schema import TRITON

#: Under ``TRITON_INTERPRET=1`` every program and every ``tl`` call costs Python overhead while
#: the block itself is one numpy operation, so interpreted launches use blocks of up to 2**16
#: elements (a whole 32x32x3 image, or an 8 x 8192 tile of logits): few programs, same results.
INTERPRETER_TILE = 2**16

#: Block of the inverse-permutation kernel: 1024 lanes = 4 warps x 8 indices per thread.
_INVERSE_BLOCK = 1024


def interpreted(device: torch.device) -> bool:
    """Whether Triton kernels run in the CPU interpreter for tensors on ``device``."""
    return device.type == "cpu" or os.environ.get("TRITON_INTERPRET") == "1"


def num_warps_for(tile: int, per_thread: int) -> int:
    """Warps for a program working on ``tile`` elements at once with ``per_thread`` elements
    per thread (32 threads per warp), between 1 and 16 warps."""
    return max(1, min(16, tile // (per_thread * 32)))


@triton.jit
def cast_to(x, dtype: tl.constexpr):
    """fp32 ``x`` cast to ``dtype`` with round-to-nearest-even. bf16 is rounded by hand: Triton's
    CPU interpreter truncates fp32 -> bf16 casts (a GPU's cvt.rn is exact, and the integer
    rounding below gives the same bits there, so one code path serves both). NaN stays NaN."""
    if dtype == tl.bfloat16:
        bits = x.to(tl.uint32, bitcast=True)
        bits = bits + 0x7FFF + ((bits >> 16) & 1)
        return (bits >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)
    return x.to(dtype)


@triton.jit
def _inverse_permutation_kernel(perm_ptr, inv_ptr, B, BLOCK: tl.constexpr):
    """One program: ``inv[perm[b]] = b`` for every ``b`` with ``0 <= perm[b] < B``; every other
    entry of ``inv`` is -1, so a ``perm`` that is not a permutation leaves -1 holes that the
    callers turn into NaN instead of reading out of bounds.

    perm_ptr: (B,) int64; inv_ptr: (B,) int64 output; B: batch size; BLOCK: lanes per step.
    """
    for start in range(0, B, BLOCK):
        idx = start + tl.arange(0, BLOCK)
        tl.store(inv_ptr + idx, tl.full([BLOCK], -1, tl.int64), mask=idx < B)
    # The -1 fill above must land before the scatter below (other threads of this program).
    tl.debug_barrier()
    for start in range(0, B, BLOCK):
        idx = start + tl.arange(0, BLOCK)
        target = tl.load(perm_ptr + idx, mask=idx < B, other=-1)
        ok = (idx < B) & (target >= 0) & (target < B)
        tl.store(inv_ptr + target, idx.to(tl.int64), mask=ok)


def inverse_permutation(perm: torch.Tensor) -> torch.Tensor:
    """``(B,) int64`` inverse of ``perm (B,) int64`` (``inv[perm[b]] = b``), -1 where ``perm``
    is not a permutation; one single-program launch, no host sync, no atomics."""
    inv = torch.empty_like(perm)
    _inverse_permutation_kernel[(1,)](perm, inv, perm.shape[0], BLOCK=_INVERSE_BLOCK, num_warps=4)
    return inv


#: The ``sem_fast_triton`` kernels (`register_kernels`), kept alive for the life of the process.
_KERNELS = torch.library.Library(TRITON, "IMPL")


def register_kernels(kernels: dict[str, Callable]) -> None:
    """Register ``op name -> function`` as the CPU (interpreter) and CUDA kernels of the
    ``sem_fast_triton`` ops (schemas, fakes and autograd: `sem_fast.ops.schema`)."""
    for name, kernel in kernels.items():
        for key in ("CPU", "CUDA"):
            _KERNELS.impl(name, kernel, key)
