"""Helpers shared by the Triton fused ops: launch geometry, bf16 rounding, the inverse permutation,
kernel registration."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from typing import Any

import torch
import torch._library.triton
import triton
import triton.language as tl
from torch._subclasses.fake_tensor import FakeTensor
from torch._subclasses.functional_tensor import FunctionalTensor, FunctionalTensorMode
from triton.runtime.jit import JITFunction

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


#: Whether this process's Triton kernels run in the CPU interpreter: decided when the module is
#: imported, as Triton decides it for `triton.jit` (TRITON_INTERPRET=1).
_INTERPRETER: tl.constexpr = tl.constexpr(os.environ.get("TRITON_INTERPRET") == "1")


@triton.jit
def cast_to(x, dtype: tl.constexpr):
    """fp32 ``x`` cast to ``dtype``, rounding to nearest even; NaN stays NaN. On a GPU this is the
    native conversion (``cvt.rn.bf16x2.f32`` for bf16: one instruction per two values, NaN to the
    canonical bf16 NaN). Triton's CPU interpreter truncates fp32 -> bf16, so there bf16 is
    rounded by hand on the bits; a NaN keeps its sign and top payload bits with the quiet bit set
    (the integer rounding alone would carry the payload of e.g. ``0x7FFFFFFF`` into the sign)."""
    if dtype == tl.bfloat16 and _INTERPRETER:
        bits = x.to(tl.uint32, bitcast=True)
        rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
        bits = tl.where(x != x, (bits >> 16) | 0x40, rounded)  # noqa: PLR0124 - x != x: x is NaN
        return bits.to(tl.uint16).to(tl.bfloat16, bitcast=True)
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
    launch(_inverse_permutation_kernel)[(1,)](perm, inv, perm.shape[0], BLOCK=_INVERSE_BLOCK, num_warps=4)
    return inv


# ----------------------------------------------------------------------------- the last-program election


def _zero_counter(device: torch.device) -> torch.Tensor:
    return torch.zeros(1, dtype=torch.int32, device=device)


#: ``(device, stream) -> (1,) int32`` election counters of the eager CUDA launches (`election_counter`).
_COUNTERS: dict[tuple[torch.device, int], torch.Tensor] = {}


def election_counter(device: torch.device) -> torch.Tensor:
    """A ``(1,) int32`` zero for a kernel's last-program election (`last_program`), which leaves
    it zero again: every program adds one, and the program that sees ``num_programs - 1`` resets it.

    An eager CUDA launch gets a counter cached per (device, stream): it is zeroed once, when made,
    and launches on one stream run one after another, so no memset launch is added per call,
    while launches on two streams never share one. While the stream is capturing a CUDA graph the
    call gets a fresh zeroed counter, allocated and zeroed inside the graph (a memset node of the
    graph, so every replay starts from zero whatever stream it runs on, and no cached memory
    belongs to a graph's private pool). In the interpreter (programs run one after another on the
    host) the counter is a fresh zero too: an interrupted interpreted launch cannot leave a stale
    count behind. A traced launch (`register_kernels`) makes its counter in the graph, a
    ``zeros`` node (the graph is a pure function: it cannot hold a cached buffer).
    """
    if tracing() or interpreted(device) or torch.cuda.is_current_stream_capturing():
        return _zero_counter(device)
    key = (device, torch.cuda.current_stream(device).cuda_stream)
    counter = _COUNTERS.get(key)
    if counter is None:
        counter = _COUNTERS[key] = _zero_counter(device)
    return counter


@triton.jit
def last_program(counter_ptr):
    """Whether this program is the last of the grid to get here: call it after the program's
    stores; the stores of every program are then visible to the last one (loads with
    ``cache_modifier=".cg"``, past the SM's L1). The barrier puts every thread's stores before
    the release of the acq_rel atomic (one thread performs it), whose acquire then orders the
    last program's loads after every other program's stores. The last program resets the counter.
    """
    tl.debug_barrier()
    ticket = tl.atomic_add(counter_ptr, 1, sem="acq_rel", scope="gpu")
    is_last = ticket == tl.num_programs(0) - 1
    if is_last:
        tl.store(counter_ptr, 0)
    return is_last


# ----------------------------------------------------------------------------- registration

#: The ``sem_fast_triton`` kernels (`register_kernels`), kept alive for the life of the process.
_KERNELS = torch.library.Library(TRITON, "IMPL")
_TRACING = threading.local()


def tracing() -> bool:
    """Whether a launcher is running inside a traced decomposition (`register_kernels`)."""
    return getattr(_TRACING, "active", False)


def launch(kernel: Any) -> Any:
    """``kernel``, ready for ``[grid](...)``: the kernel itself in an eager call, its
    ``torch.library.wrap_triton`` wrapper while the op is traced (`register_kernels`), so that
    the launch becomes a node of the graph. Every launcher launches through it."""
    return torch.library.wrap_triton(kernel) if tracing() else kernel


def traced_constant(values: list[float], device: torch.device) -> torch.Tensor:
    """``(n,) float32`` of Python numbers for a traced launcher (`tracing`), made on ``device`` by
    ops that Inductor fuses into one small kernel: ``torch.tensor`` would put a host constant and a
    host-to-device copy into the graph, which CUDA graphs cannot hold."""
    index = torch.arange(len(values), device=device)
    out = torch.zeros(len(values), dtype=torch.float32, device=device)
    for i, value in enumerate(values):
        out = torch.where(index == i, value, out)
    return out


def _decomposes(types, args, kwargs) -> bool:
    """Whether a ``sem_fast_triton`` call seen by ``FunctionalTensorMode`` is traced into its
    kernels: plain and fake tensors only, all on CUDA with compiled (not interpreted) Triton,
    with static shapes and strides (the launchers turn sizes into block constexprs), and not
    while ``torch.export`` keeps custom Triton ops whole."""
    if any(t not in (torch.Tensor, FunctionalTensor) and not issubclass(t, FakeTensor) for t in types):
        return False
    if not getattr(torch._functorch.config, "decompose_custom_triton_ops", True):
        return False
    tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
    return all(
        t.device.type == "cuda"
        and not interpreted(t.device)
        and all(isinstance(n, int) for n in (*t.shape, *t.stride(), t.storage_offset()))
        for t in tensors
    )


def _decomposition(kernel: Callable) -> Callable:
    """The ``FunctionalTensorMode`` rule of one op: its launcher, run under the mode with every
    launch wrapped (`launch`), or the op kept whole where `_decomposes` says no."""

    def rule(mode, op, types, args, kwargs):
        if not _decomposes(types, args, kwargs):
            return mode.__torch_dispatch__(op, types, args, kwargs)
        was_tracing, _TRACING.active = tracing(), True
        try:
            with mode:
                return kernel(*args, **kwargs)
        finally:
            _TRACING.active = was_tracing

    return rule


def register_kernels(kernels: dict[str, Callable]) -> None:
    """Register ``op name -> launcher`` as the kernels of the ``sem_fast_triton`` ops
    (schemas, fakes and autograd: `sem_fast.ops.schema`).

    Eager calls on CPU (the interpreter) and CUDA run the launcher through the dispatcher, an
    opaque custom op. On CUDA, ``torch.compile`` also sees inside it, as ``torch.library.triton_op``
    makes it see inside its ops: a ``FunctionalTensorMode`` rule (AOTAutograd traces under that
    mode) runs the launcher on the traced tensors, every launch through `launch`, so each Triton
    kernel becomes a ``triton_kernel_wrapper_functional`` node that Inductor compiles and launches
    itself (no dispatcher or Python launcher per call) and CUDA graphs capture with the rest of the
    graph. The CPU interpreter, symbolic shapes and ``torch.export`` keep the op whole. Every
    Triton function of a launcher's module is listed as the op's kernels for AOTAutograd's cache
    key (``torch._library.triton.triton_ops_to_kernels``, as ``triton_op`` does, where the torch
    version has it), so that editing a kernel changes the key.
    """
    op_kernels = getattr(torch._library.triton, "triton_ops_to_kernels", None)
    for name, kernel in kernels.items():
        for key in ("CPU", "CUDA"):
            _KERNELS.impl(name, kernel, key)
        rule = _decomposition(kernel)
        torch.library.register_torch_dispatch(f"{TRITON}::{name}", FunctionalTensorMode, rule, lib=_KERNELS)
        if op_kernels is not None:
            module = vars(sys.modules[kernel.__module__]).values()
            op_kernels[f"{TRITON}::{name}"] = [f for f in module if isinstance(f, JITFunction)]
