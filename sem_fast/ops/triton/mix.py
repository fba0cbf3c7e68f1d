"""Fused image mix: normalize, crop/flip augment and mixup / CutMix a batch in one Triton pass.

One kernel reads each output pixel's source from the raw batch (``(B, H, W, C) uint8`` as a
loader produces it, or ``(B, C, H, W)`` float in any memory format) and writes both the clean
and the mixed image, so the batch goes from the dataset to the network input in a single pass:

    clean[b] = normalize(augment_b(x[b]))
    mix[b]   = lam[b] * clean[b] + (1 - lam[b]) * clean[perm[b]]            (mixup)
    mix[b]   = clean[b] with draw.box[b] taken from clean[perm[b]]          (CutMix)

as `sem_fast.reference.mix_images`. The op is linear in float input, so it is differentiable:
the backward kernel gathers, for each input pixel of sample ``k``, the output gradients of ``k``
and of the sample whose partner is ``k`` (through the inverse permutation, no atomics), and sums
over the crop/flip positions that read the pixel.

**Tiling** (both kernels, `_tile`). Grid ``(pixel tiles, B)``: a program works on one sample, so
every per-sample quantity (partner, lambda, box, crop offset, flip, the NaN of a bad value) is a
scalar loaded once per thread. Each thread owns runs of ``V`` consecutive pixels of one image row
and all ``C`` channels of them, held as a ``(CP, TH, V)`` tile (``CP`` = ``C`` rounded up to a
power of two, ``TH`` runs): in channels-last order a run's ``C * V`` elements are contiguous
(register ``(p, ., u)`` is element ``p * V + u`` of the run), in NCHW order register
``(p, ., u)`` is channel ``p`` of pixel ``u``. Either way a register's channel and pixel are
compile-time constants, so per-channel constants fold into registers, row work is done once per
run and column work (crop, flip, box) once per pixel, not per element; element addresses are a
pixel's base plus a constant, and ``V = 16 bytes / output element`` makes each channel row of a
run one 16-byte store. The row of a run comes from a multiply-high by a magic number (`_magic`),
never a division. Normalization of uint8 input is one FMA per element with
``scale = 1 / (255 std)`` and ``bias = -mean / std`` (`_norm`). The SASS this gives on an H100
(instructions per element, registers, spills): ``python -m benchmarks.static``.

Layout of this file: Triton kernels, then their launchers, registered as the CPU (interpreter)
and CUDA kernels of the ops ``sem_fast_triton::mix_images`` and ``mix_images_backward``, whose
schemas, fake kernels and autograd `sem_fast.ops.schema` defines for every backend.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from sem_fast._checks import KERNEL_FLOAT_DTYPES, check_fields, check_images
from sem_fast.ops.schema import memory_format
from sem_fast.ops.triton.utils import (
    INTERPRETER_TILE,
    cast_to,
    interpreted,
    inverse_permutation,
    launch,
    register_kernels,
    traced_constant,
    tracing,
)

#: Element offsets within one sample at or above this do not fit a signed 32-bit integer;
#: kernels then compute them in int64 (see `_needs_int64`; the sample's base is always int64).
_INT32_SPAN = 2**31

#: Warps per program on a GPU: 128 threads, each with runs of V pixels (a 32x32 image in bf16 is
#: one program). Per-sample work is per thread, so the instructions per element do not depend on
#: it; 4 warps keep the grid of a 224x224 batch at 49 programs per sample (benchmarks/static.py).
_GPU_WARPS = 4
#: Bytes per thread and output chunk: one 16-byte vector store (the widest a thread issues).
_VECTOR_BYTES = 16
#: Register elements per thread (runs x CP x V) at most: 32 is one run of 3 or 4 channels in bf16
#: (uint8 -> bf16, 3 channels: 72 registers, no spill; 4 channels: 80), two in fp32 (80-96), four of
#: gray bf16; measured with benchmarks/static.py.
_MAX_THREAD_ELEMENTS = 32
#: Register elements per thread of the backward with reflect padding: each of its 9 candidate steps
#: gathers 3 values per element; at 24 (2 fp32 runs of 3 channels) ptxas spills (128 registers +
#: 12 spill instructions), at 16 it does not (110 registers; benchmarks/static.py).
_REFLECT_BACKWARD_ELEMENTS = 16
#: Register cap of the mix kernels (``.maxnreg``). Without one, ptxas sizes the kernel from the
#: block alone (``.reqntid 128``), aims at 64 registers and spills a value live across the mixup /
#: CutMix branch (uint8 -> bf16: 64 registers + 8 bytes of stack); with a cap it allocates what
#: it needs (72, no spill). 128 keeps at least 4 blocks (16 warps) per SM (benchmarks/static.py).
_GPU_MAXNREG = 128
#: CUDA's limit on the grid's second axis (the samples).
_MAX_GRID_Y = 65535


# ----------------------------------------------------------------------------- kernels


@triton.jit
def _divmod(n, d, MUL, SHIFT, INT64: tl.constexpr):
    """``(n // d, n % d)`` for ``n >= 0``: in int32 as ``(umulhi(n, MUL) + n) >> SHIFT`` (exact for
    ``n < 2**31``, see `_magic`), in int64 by division."""
    if INT64:
        quotient = n // d
    else:
        nu = n.to(tl.uint32, bitcast=True)
        quotient = ((tl.umulhi(nu, tl.cast(MUL, tl.uint32, bitcast=True)) + nu) >> SHIFT).to(tl.int32, bitcast=True)
    return quotient, n - quotient * d


@triton.jit
def _tile(
    H, W, RW, RW_MUL, RW_SHIFT,
    C: tl.constexpr, CP: tl.constexpr, TH: tl.constexpr, V: tl.constexpr,
    CHANNELS_LAST: tl.constexpr, FULL_RUNS: tl.constexpr, INT64: tl.constexpr,
):
    """The ``(CP, TH, V)`` registers of pixel tile ``program_id(0)``: thread ``t`` owns run
    ``tile * TH + t`` of the image, pixels ``[j0, j0 + V)`` of row ``i`` (``RW = cdiv(W, V)``
    runs per row, ``RW_MUL``/``RW_SHIFT``: its `_magic`), all channels.

    Returns ``(i (1, TH, 1) row, j (*, TH, V) column, ch (CP, 1, *) channel, o, valid, pixel_ok,
    lane_ok)``:
    ``o`` the element offset in a dense sample in the output's order (NHWC if ``CHANNELS_LAST``:
    register ``(p, t, u)`` is element ``p * V + u`` of the run; else NCHW: channel ``p`` of pixel
    ``u``), ``valid`` whether the register is an element of the image (in terms of ``o``, so that
    it is constant over each vector of ``V`` outputs), ``pixel_ok`` the same per pixel, ``lane_ok``
    whether the register is one of the ``C`` channel rows (``CP > C`` pads). A
    register's channel and pixel within the run are compile-time constants. ``FULL_RUNS``: ``V``
    divides ``W`` (no run crosses a row end, and the stores' bounds are multiples of ``V``)."""
    tile = tl.program_id(0)
    if INT64:
        tile = tile.to(tl.int64)
    p = tl.arange(0, CP)[:, None, None]
    u = tl.arange(0, V)[None, None, :]
    f = p * V + u
    if CHANNELS_LAST:
        pix = f // C
        ch = f % C
    else:
        pix = u
        ch = p
    i, run = _divmod(tile * TH + tl.arange(0, TH)[None, :, None], RW, RW_MUL, RW_SHIFT, INT64)
    j0 = run * V
    j = j0 + pix
    if FULL_RUNS:
        W = RW * V  # the same width, its divisibility by V now visible to the compiler
    if CHANNELS_LAST:
        o = (i * W + j0) * C + f
        valid = (p < C) & (i < H) & (j0 * C + f < W * C)
    else:
        o = ch * (H * W) + i * W + j
        valid = (p < C) & (i < H) & (j < W)
    return i, j, ch, o, valid, (p < C) & (i < H) & (j < W), p < C


@triton.jit
def _channel_offset(ch, stride, C: tl.constexpr):
    """``ch * stride`` as a chain of selects that folds to a constant per register (``ch`` is one
    per register): unlike the product, it does not tell Triton that channels are contiguous, so
    an NHWC gather keeps the layout of the outputs' vector stores (no shared-memory shuffle)."""
    off = tl.zeros(ch.shape, tl.int64)
    for k in tl.static_range(1, C):
        off = tl.where(ch == k, k * stride, off)
    return off


@triton.jit
def _crop(s, N, REFLECT: tl.constexpr, INT64: tl.constexpr):
    """Padded source index ``s`` along a side of ``N`` (in ``[-P, N + P)``: the kernels clamp bad
    offsets) -> ``(index, inside)``: mirrored into the image with reflect padding (``P < N``:
    ``min(|s|, 2(N - 1) - |s|)``), else ``inside`` is False in the zero padding."""
    if REFLECT:
        s = tl.abs(s)
        return tl.minimum(s, 2 * (N - 1) - s), tl.full(s.shape, 1, tl.int1)
    if INT64:
        return s, (s >= 0) & (s < N)
    return s, s.to(tl.uint32, bitcast=True) < tl.cast(N, tl.uint32)  # one compare for 0 <= s < N


@triton.jit
def _augment_draw(offset_ptr, flip_ptr, k, P, W, AUGMENT: tl.constexpr):
    """Sample ``k``'s crop and flip as scalars ``(row shift, column base a, column sign g, ok)``:
    output pixel ``(i, j)`` reads padded source ``(i + row shift, a + g * j)``; ``ok`` is False
    for an offset outside ``[0, 2P]`` (then clamped to ``P``: the caller writes NaN)."""
    if AUGMENT:
        dy = tl.load(offset_ptr + 2 * k)
        dx = tl.load(offset_ptr + 2 * k + 1)
        ok = (dy >= 0) & (dy <= 2 * P) & (dx >= 0) & (dx <= 2 * P)
        dy = tl.where(ok, dy, P) - P
        dx = tl.where(ok, dx, P) - P
        flip = tl.load(flip_ptr + k) != 0
        return dy, tl.where(flip, W - 1 + dx, dx), tl.where(flip, -1, 1), ok
    return 0, 0, 1, True


@triton.jit
def _source(
    i, j, row_shift, col_base, col_sign, H, W, sxh, sxw,
    AUGMENT: tl.constexpr, REFLECT: tl.constexpr, INT64: tl.constexpr,
):
    """``(row part, column part, inside)`` of the offset (within the sample, channel 0, int64) of
    the source of output pixel ``(i, j)`` (`_augment_draw`'s crop and flip): the row part is
    per thread, the column part per pixel; channel ``c`` is at ``+ c * sxc``, a per-register
    constant that the compiler folds into the load's address (`_channel_offset`). ``i`` must be a
    row of the image."""
    if AUGMENT:
        si, row_in = _crop(i + row_shift, H, REFLECT, INT64)
        sj, col_in = _crop(col_base + col_sign * j, W, REFLECT, INT64)
        return (si * sxh).to(tl.int64), (sj * sxw).to(tl.int64), row_in & col_in
    return (i * sxh).to(tl.int64), (j * sxw).to(tl.int64), tl.full(j.shape, 1, tl.int1)


@triton.jit
def _box(box_ptr, k):
    """Sample ``k``'s half-open CutMix box ``(y0, y1, x0, x1)``, as scalars."""
    return tl.load(box_ptr + 4 * k), tl.load(box_ptr + 4 * k + 1), tl.load(box_ptr + 4 * k + 2), tl.load(box_ptr + 4 * k + 3)


@triton.jit
def _in_box(box, i, j):
    """Whether pixel ``(i, j)`` lies in the box ``(y0, y1, x0, x1)``."""
    y0, y1, x0, x1 = box
    return (i >= y0) & (i < y1) & (j >= x0) & (j < x1)


@triton.jit
def _mix_forward_kernel(
    x_ptr, sxb, sxc, sxh, sxw,
    clean_ptr, mix_ptr,
    perm_ptr, lam_ptr, box_ptr, cutmix_ptr, offset_ptr, flip_ptr, norm_ptr,
    B, H, W, P, RW, RW_MUL, RW_SHIFT,
    C: tl.constexpr, CP: tl.constexpr, TH: tl.constexpr, V: tl.constexpr,
    CHANNELS_LAST: tl.constexpr, FULL_RUNS: tl.constexpr, DENSE: tl.constexpr, NORMALIZE: tl.constexpr,
    AUGMENT: tl.constexpr, REFLECT: tl.constexpr, MIX: tl.constexpr, INT64: tl.constexpr,
):
    """Clean and mixed images of sample ``program_id(1)``, one `_tile` of pixels per program.

    x_ptr: input, read as logical ``(B, C, H, W)`` through strides ``sxb, sxc, sxh, sxw``
        (elements; uint8 NHWC input passes its strides permuted).
    clean_ptr, mix_ptr: dense ``(B, C, H, W)`` outputs in NHWC (``CHANNELS_LAST``) or NCHW
        order, in the output dtype; ``mix_ptr`` unused unless ``MIX``.
    perm_ptr (B,) int64, lam_ptr (B,) fp32, box_ptr (B, 4) int32 (y0, y1, x0, x1),
    cutmix_ptr (B,) bool: the MixDraw. offset_ptr (B, 2) int32 (dy, dx), flip_ptr (B,) bool:
        the AugmentDraw (used if ``AUGMENT``). norm_ptr: (2, C) fp32 rows scale and bias of
        `_norm` (used if ``NORMALIZE``, i.e. uint8 input).
    B, H, W: sizes; P: crop padding; RW, RW_MUL, RW_SHIFT, C, CP, TH, V, FULL_RUNS: see `_tile`.
    DENSE: the input's in-sample layout is the output's and there is no augment (the run is
    read with vector loads at the output's offsets). INT64: in-sample offsets in int64.
    Grid: ``(cdiv(H * RW, TH), B)``.
    """
    b = tl.program_id(1)
    i, j, ch, o, valid, pixel_ok, lane_ok = _tile(H, W, RW, RW_MUL, RW_SHIFT, C, CP, TH, V, CHANNELS_LAST, FULL_RUNS, INT64)
    # Per-channel constants: each register's channel is a compile-time constant, so the select
    # chain folds to one scalar per register.
    scale = tl.full(ch.shape, 1.0, tl.float32)
    bias = tl.full(ch.shape, -0.0, tl.float32)  # x + -0.0 == x, -0.0 included
    if NORMALIZE:
        for k in tl.static_range(C):
            scale = tl.where(ch == k, tl.load(norm_ptr + k), scale)
            bias = tl.where(ch == k, tl.load(norm_ptr + C + k), bias)
    # Gathers read from a row of the image (the tail tile's threads past the last row read the
    # last one, unused), so only zero padding (``inside``) and a partial run need a mask.
    load_ok = lane_ok if FULL_RUNS else pixel_ok
    i_src = tl.minimum(i, H - 1)

    b64 = b.to(tl.int64)
    row_shift, col_base, col_sign, ok = _augment_draw(offset_ptr, flip_ptr, b, P, W, AUGMENT)
    if DENSE:
        x = tl.load(x_ptr + b64 * sxb + o, mask=valid, other=0)
    else:
        row, col, inside = _source(i_src, j, row_shift, col_base, col_sign, H, W, sxh, sxw, AUGMENT, REFLECT, INT64)
        x = tl.load(x_ptr + (b64 * sxb + row + col) + _channel_offset(ch, sxc, C), mask=load_ok & inside, other=0)
    v = x.to(tl.float32) * scale + (bias + tl.where(ok, 0.0, float("nan")))
    out = b64 * (C * H * W) + o
    tl.store(clean_ptr + out, cast_to(v, clean_ptr.dtype.element_ty), mask=valid)

    if MIX:
        partner = tl.load(perm_ptr + b)
        perm_ok = (partner >= 0) & (partner < B)
        partner = tl.where(perm_ok, partner, 0)
        lam = tl.load(lam_ptr + b)
        row_shift_q, col_base_q, col_sign_q, ok_q = _augment_draw(offset_ptr, flip_ptr, partner, P, W, AUGMENT)
        if DENSE:
            xq = tl.load(x_ptr + partner * sxb + o, mask=valid, other=0)
        else:
            row_q, col_q, inside_q = _source(
                i_src, j, row_shift_q, col_base_q, col_sign_q, H, W, sxh, sxw, AUGMENT, REFLECT, INT64
            )
            xq = tl.load(
                x_ptr + (partner * sxb + row_q + col_q) + _channel_offset(ch, sxc, C), mask=load_ok & inside_q, other=0
            )
        vq = xq.to(tl.float32) * scale + (bias + tl.where(ok_q, 0.0, float("nan")))
        if (tl.load(cutmix_ptr + b) != 0) & perm_ok:
            m = tl.where(_in_box(_box(box_ptr, b), i, j), vq, v)
        else:
            # A partner outside the batch makes the whole mixed image NaN (through its weight).
            m = lam * v + tl.where(perm_ok, 1.0 - lam, float("nan")) * vq
        tl.store(mix_ptr + out, cast_to(m, mix_ptr.dtype.element_ty), mask=valid)


@triton.jit
def _preimage(r, base, sign, N, which):
    """Output index ``k`` along one axis whose (cropped, flipped) source ``base + sign * k``,
    mirrored by reflect padding, is input index ``r``: ``which`` 0 is the direct read, 1 the
    mirror of the leading pad (``r > 0``), 2 that of the trailing pad (``r < N - 1``); the
    mirrors are distinct source positions only there. Returns ``(k, valid)``."""
    u = tl.where(which == 0, r, tl.where(which == 1, -r, 2 * (N - 1) - r))
    ok = tl.where(which == 0, r >= 0, tl.where(which == 1, r > 0, r < N - 1))  # r >= 0: always
    k = sign * (u - base)
    return k, ok & (k >= 0) & (k < N)


@triton.jit
def _output_grad(
    gc_ptr, gm_ptr, gs_ptr, off_c, off_m, i, j, mask,
    box_k, box_s, cut_k, own_lerp, cut_s, s_in, s_out, s_lerp,
    HAS_GC: tl.constexpr, HAS_GM: tl.constexpr,
):
    """fp32 gradient w.r.t. the clean (augmented) image of sample ``k`` at output pixel ``(i, j)``:
    ``g_clean[k] + own * g_mix[k] + partner * g_mix[s]``, ``s`` the sample whose partner is
    ``k``. ``gc_ptr``/``gm_ptr``/``gs_ptr`` point at samples ``k``, ``k`` and ``s``; ``off_c`` and
    ``off_m`` are the element offsets in ``g_clean`` and ``g_mix``. ``own`` is ``own_lerp``
    (lambda) for mixup, 0 inside / 1 outside ``k``'s box ``box_k`` for CutMix; ``partner`` is
    ``s_lerp`` (1 - lambda), or ``s_in`` / ``s_out`` inside / outside ``box_s`` (NaN for a bad
    ``s``)."""
    g = tl.zeros(mask.shape, tl.float32)
    if HAS_GC:
        g += tl.load(gc_ptr + off_c, mask=mask, other=0).to(tl.float32)
    if HAS_GM:
        own = tl.where(cut_k, tl.where(_in_box(box_k, i, j), 0.0, 1.0), own_lerp)
        partner = tl.where(cut_s, tl.where(_in_box(box_s, i, j), s_in, s_out), s_lerp)
        g += own * tl.load(gm_ptr + off_m, mask=mask, other=0).to(tl.float32)
        g += partner * tl.load(gs_ptr + off_m, mask=mask, other=0).to(tl.float32)
    return g


@triton.jit
def _candidate_grad(
    gc, gm, gs, gc_ch, gm_ch, sgch, sgcw, sgmh, sgmw, r, col, row_which, col_which, row_shift, col_base, col_sign,
    H, W, mask, box_k, box_s, cut_k, own_lerp, cut_s, s_in, s_out, s_lerp, HAS_GC: tl.constexpr, HAS_GM: tl.constexpr,
):
    """`_output_grad` at the output pixel of `_preimage` candidates ``(row_which, col_which)`` of
    input pixel ``(r, col)`` (0 where that candidate does not exist)."""
    i, row_ok = _preimage(r, row_shift, 1, H, row_which)
    j, col_ok = _preimage(col, col_base, col_sign, W, col_which)
    return _output_grad(
        gc, gm, gs, gc_ch + (i * sgch + j * sgcw).to(tl.int64), gm_ch + (i * sgmh + j * sgmw).to(tl.int64), i, j,
        mask & row_ok & col_ok, box_k, box_s, cut_k, own_lerp, cut_s, s_in, s_out, s_lerp, HAS_GC, HAS_GM,
    )  # fmt: skip


@triton.jit
def _mix_backward_kernel(
    gc_ptr, sgcb, sgcc, sgch, sgcw,
    gm_ptr, sgmb, sgmc, sgmh, sgmw,
    dx_ptr, inv_ptr, lam_ptr, box_ptr, cutmix_ptr, offset_ptr, flip_ptr,
    B, H, W, P, RW, RW_MUL, RW_SHIFT, CANDIDATES,
    C: tl.constexpr, CP: tl.constexpr, TH: tl.constexpr, V: tl.constexpr,
    CHANNELS_LAST: tl.constexpr, FULL_RUNS: tl.constexpr, DENSE: tl.constexpr, HAS_GC: tl.constexpr,
    HAS_GM: tl.constexpr, AUGMENT: tl.constexpr, REFLECT: tl.constexpr, INT64: tl.constexpr,
):
    """Gradient w.r.t. float input of sample ``k = program_id(1)``, one `_tile` of its pixels.

    gc_ptr, gm_ptr: gradients of the clean and mixed outputs, logical ``(B, C, H, W)`` with
        their strides (each used if ``HAS_GC`` / ``HAS_GM``).
    dx_ptr: dense ``(B, C, H, W)`` output in NHWC (``CHANNELS_LAST``) or NCHW order.
    inv_ptr (B,) int64: inverse of ``perm`` (-1 holes give NaN). lam_ptr, box_ptr, cutmix_ptr,
        offset_ptr, flip_ptr, sizes, P and the tile constexprs: as in `_mix_forward_kernel`.
    CANDIDATES: output positions per axis pair that may read an input pixel: 1, or 9 with
        reflect padding (see `_preimage`).
    DENSE: both gradients have the output's in-sample layout and there is no augment (vector
        loads at the output's offsets). The input pixel ``(r, col)`` is read by the output
        pixels of `_preimage` (rows per thread, columns per pixel); their gradients are summed (a
        gather, no atomics).
    Grid: ``(cdiv(H * RW, TH), B)``.
    """
    k = tl.program_id(1)
    r, col, ch, o, valid, pixel_ok, _ = _tile(H, W, RW, RW_MUL, RW_SHIFT, C, CP, TH, V, CHANNELS_LAST, FULL_RUNS, INT64)
    k64 = k.to(tl.int64)

    cut_k = False
    own_lerp = 0.0
    box_k = (0, 0, 0, 0)
    s = k64
    box_s = (0, 0, 0, 0)
    cut_s = False
    s_in = 0.0
    s_out = 0.0
    s_lerp = 0.0
    if HAS_GM:
        cut_k = tl.load(cutmix_ptr + k) != 0
        own_lerp = tl.load(lam_ptr + k)
        box_k = _box(box_ptr, k)
        s = tl.load(inv_ptr + k)
        s_ok = (s >= 0) & (s < B)
        s = tl.where(s_ok, s, 0)
        cut_s = tl.load(cutmix_ptr + s) != 0
        box_s = _box(box_ptr, s)
        nan_s = tl.where(s_ok, 0.0, float("nan"))
        s_in = 1.0 + nan_s
        s_out = nan_s
        s_lerp = 1.0 - tl.load(lam_ptr + s) + nan_s
    gc = gc_ptr + k64 * sgcb
    gm = gm_ptr + k64 * sgmb
    gs = gm_ptr + s * sgmb
    if DENSE:
        acc = _output_grad(gc, gm, gs, o, o, r, col, valid, box_k, box_s, cut_k, own_lerp, cut_s, s_in, s_out,
                           s_lerp, HAS_GC, HAS_GM)  # fmt: skip
    elif AUGMENT:
        row_shift, col_base, col_sign, ok = _augment_draw(offset_ptr, flip_ptr, k, P, W, AUGMENT)
        acc = tl.full(valid.shape, -0.0, tl.float32) + tl.where(ok, -0.0, float("nan"))  # NaN: a bad crop offset
        gc_ch = _channel_offset(ch, sgcc, C)
        gm_ch = _channel_offset(ch, sgmc, C)
        if REFLECT:
            # The 3 x 3 (row, column) candidates one after the other, in a loop with a run-time trip
            # count (CANDIDATES = 9) so that only one candidate's gathers are in flight (unrolled,
            # the 27 gathers of a run need more than 255 registers).
            for n in range(CANDIDATES):
                acc += _candidate_grad(
                    gc, gm, gs, gc_ch, gm_ch, sgch, sgcw, sgmh, sgmw, r, col, n // 3, n % 3, row_shift, col_base,
                    col_sign, H, W, pixel_ok, box_k, box_s, cut_k, own_lerp, cut_s, s_in, s_out, s_lerp, HAS_GC, HAS_GM,
                )  # fmt: skip
        else:
            acc += _candidate_grad(
                gc, gm, gs, gc_ch, gm_ch, sgch, sgcw, sgmh, sgmw, r, col, 0, 0, row_shift, col_base, col_sign, H, W,
                pixel_ok, box_k, box_s, cut_k, own_lerp, cut_s, s_in, s_out, s_lerp, HAS_GC, HAS_GM,
            )  # fmt: skip
    else:
        acc = _output_grad(
            gc, gm, gs, _channel_offset(ch, sgcc, C) + (r * sgch + col * sgcw).to(tl.int64),
            _channel_offset(ch, sgmc, C) + (r * sgmh + col * sgmw).to(tl.int64), r, col, pixel_ok, box_k,
            box_s, cut_k, own_lerp, cut_s, s_in, s_out, s_lerp, HAS_GC, HAS_GM,
        )  # fmt: skip
    tl.store(dx_ptr + k64 * (C * H * W) + o, cast_to(acc, dx_ptr.dtype.element_ty), mask=valid)


# ----------------------------------------------------------------------------- launchers (the ops' kernels)


class Geometry(NamedTuple):
    """Tile of a mix kernel launch (`geometry`, see `_tile`): ``CP`` channel rows, ``TH`` runs of
    ``V`` pixels per program (``TH / (32 num_warps)`` per thread), ``num_warps``, ``RW`` runs per
    image row, and the grid ``(tiles, B)``."""

    CP: int
    TH: int
    V: int
    num_warps: int
    RW: int
    tiles: int

    def args(self) -> tuple[int, int, int]:
        """The kernels' ``RW, RW_MUL, RW_SHIFT`` arguments."""
        return (self.RW, *_magic(self.RW))

    def options(self, C: int, W: int) -> dict:
        """The kernels' tile constexprs and launch options: `_GPU_MAXNREG` in eager launches only
        (a traced launch becomes an Inductor kernel node, whose launch options are Triton's own
        without maxnreg)."""
        options = {"C": C, "CP": self.CP, "TH": self.TH, "V": self.V, "FULL_RUNS": W % self.V == 0}
        options["num_warps"] = self.num_warps
        if not tracing():
            options["maxnreg"] = _GPU_MAXNREG
        return options


def geometry(
    C: int, H: int, W: int, out_dtype: torch.dtype, device: torch.device, thread_elements: int = _MAX_THREAD_ELEMENTS
) -> Geometry:
    """The tile of both mix kernels for ``C x H x W`` images written in ``out_dtype`` on
    ``device``: runs of ``V = 16 bytes / element`` pixels (at most a row), `_GPU_WARPS` warps
    (fewer for small images) on a GPU, each thread with as many runs as fit in ``thread_elements``
    registers (`_MAX_THREAD_ELEMENTS`: 1 run for 3 channels in bf16, 2 in fp32, 4 for gray bf16),
    so that per-thread work spreads over at least 16 elements; whole samples (up to
    `INTERPRETER_TILE` elements) in the interpreter."""
    cp = triton.next_power_of_2(C)
    v = max(1, min(_VECTOR_BYTES // out_dtype.itemsize, thread_elements // cp, triton.next_power_of_2(W)))
    rw = triton.cdiv(W, v)
    runs = H * rw
    if interpreted(device):
        th = min(triton.next_power_of_2(runs), max(1, INTERPRETER_TILE // (cp * v)))
        warps = 1
    else:
        per_thread = max(1, thread_elements // (cp * v))
        warps = min(_GPU_WARPS, triton.next_power_of_2(triton.cdiv(runs, 32 * per_thread)))
        th = 32 * warps * min(per_thread, triton.next_power_of_2(triton.cdiv(runs, 32 * warps)))
    return Geometry(cp, th, v, warps, rw, triton.cdiv(runs, th))


def _check_batch(B: int) -> None:
    """The grid's second axis holds the samples: at most 65535 (CUDA's limit)."""
    if B > _MAX_GRID_Y:
        raise ValueError(f"the Triton mix kernels take at most {_MAX_GRID_Y} images per call, got {B}: split the batch")


@functools.lru_cache(maxsize=64)
def _magic(d: int) -> tuple[int, int]:
    """``(multiplier, shift)`` such that ``n // d == (umulhi(n, m) + n) >> shift`` for every
    ``0 <= n < 2**31`` (Granlund and Montgomery's 33-bit multiplier ``2**32 + m``, with
    ``shift = ceil(log2 d)``; ``umulhi(n, m) + n < 2**32`` for such ``n``). The multiplier is
    returned as the signed int32 of its bits (the kernels reinterpret it as uint32)."""
    shift = (d - 1).bit_length()
    m = (2**32 * (2**shift - d)) // d + 1
    return (m - 2**32 if m >= 2**31 else m), shift


def _needs_int64(*tensors: torch.Tensor | None) -> bool:
    """Whether an element offset within one sample of any of ``tensors`` (through its strides)
    can reach `_INT32_SPAN` / 2, so that kernels must index in int64 (the factor 2 leaves room
    for the masked registers past a sample's end, at most one tile)."""
    for t in tensors:
        if t is None or t.numel() == 0:
            continue
        span = 1 + sum((size - 1) * abs(stride) for size, stride in zip(t.shape[1:], t.stride()[1:]))
        if 2 * span >= _INT32_SPAN:
            return True
    return False


def _nchw_strides(images: torch.Tensor) -> tuple[int, int, int, int]:
    """Strides of ``images`` as a logical ``(B, C, H, W)`` tensor (uint8 input is NHWC)."""
    sb, s1, s2, s3 = images.stride()
    return (sb, s3, s1, s2) if images.dtype == torch.uint8 else (sb, s1, s2, s3)


def _dense_like(strides: tuple[int, ...], C: int, H: int, W: int, channels_last: bool) -> bool:
    """Whether logical ``(B, C, H, W)`` strides lay each sample out as a dense output does."""
    dense = (1, W * C, C) if channels_last else (H * W, W, 1)
    return all(s == d or n == 1 for s, d, n in zip(strides[1:], dense, (C, H, W)))


def _contiguous(*tensors: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
    """The draw tensors as the kernels index them (dense; a no-op for `sample_draw`'s)."""
    return tuple(None if t is None else t.contiguous() for t in tensors)


def _norm(mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Rows ``scale = 1 / (255 std)`` and ``bias = -mean / std`` (computed in float64, rounded once
    to fp32): ``(x / 255 - mean) / std == x * scale + bias`` up to about 2 fp32 ulps of the
    operands, within the ops' float32 tolerance (1e-5 relative, 1e-6 absolute; see tests/ops)."""
    return tuple(1.0 / (255.0 * s) for s in std), tuple(-m / s for m, s in zip(mean, std))


@functools.lru_cache(maxsize=16)
def _norm_table(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device) -> torch.Tensor:
    """``(2, C) float32`` rows of `_norm` on ``device``, made once per configuration: the op's only
    host-to-device copy, from pinned memory without a sync, and cached so that steady-state
    steps (and CUDA graph replays after a warm-up step) do none."""
    table = torch.tensor(_norm(mean, std), dtype=torch.float32)
    if device.type == "cuda":
        return table.pin_memory().to(device, non_blocking=True)
    return table.to(device)


def mix_images_kernel(
    images: torch.Tensor,
    perm: torch.Tensor,
    lam: torch.Tensor,
    box: torch.Tensor,
    is_cutmix: torch.Tensor,
    offset: torch.Tensor | None,
    flip: torch.Tensor | None,
    mean: list[float],
    std: list[float],
    crop_padding: int,
    reflect: bool,
    out_dtype: torch.dtype,
    channels_last: bool,
    mixes: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``sem_fast_triton::mix_images`` (schema: `sem_fast.ops.schema`): one launch of
    `_mix_forward_kernel`. Called directly it checks every tensor's metadata (no values: no
    sync), so no argument can make the kernel read out of bounds."""
    B, C, H, W = check_images(images, KERNEL_FLOAT_DTYPES)
    _check_batch(B)
    check_fields("draw", {"perm": perm, "lam": lam, "box": box, "is_cutmix": is_cutmix}, B, images.device)
    if (offset is None) != (flip is None):
        raise ValueError("offset and flip must be given together (an AugmentDraw) or both be None")
    augment = offset is not None
    if augment:
        check_fields("augment", {"offset": offset, "flip": flip}, B, images.device)
        _check_padding(crop_padding, reflect, H, W)
    normalize = images.dtype == torch.uint8
    if normalize and not len(mean) == len(std) == C:  # the kernel reads one mean/std per channel
        raise ValueError(f"mean and std must have one value per channel ({C}), got {len(mean)} and {len(std)}")
    perm, lam, box, is_cutmix, offset, flip = _contiguous(perm, lam, box, is_cutmix, offset, flip)
    clean = torch.empty((B, C, H, W), dtype=out_dtype, device=images.device, memory_format=memory_format(channels_last))
    mixed = torch.empty_like(clean) if mixes else clean.new_empty(0)
    if not normalize:
        norm = lam
    elif tracing():  # made in the traced graph: the cache holds real tensors only
        norm = traced_constant([v for row in _norm(tuple(mean), tuple(std)) for v in row], images.device).view(2, C)
    else:
        norm = _norm_table(tuple(mean), tuple(std), images.device)
    g = geometry(C, H, W, out_dtype, images.device)
    strides = _nchw_strides(images)
    launch(_mix_forward_kernel)[(g.tiles, B)](
        images, *strides, clean, mixed,
        perm, lam, box, is_cutmix, offset if augment else box, flip if augment else is_cutmix, norm,
        B, H, W, crop_padding if augment else 0, *g.args(), CHANNELS_LAST=channels_last,
        DENSE=not augment and _dense_like(strides, C, H, W, channels_last), NORMALIZE=normalize,
        AUGMENT=augment, REFLECT=reflect and augment, MIX=mixes, INT64=_needs_int64(images, clean),
        **g.options(C, W),
    )  # fmt: skip
    return clean, mixed


def _check_padding(crop_padding: int, reflect: bool, H: int, W: int) -> None:
    """Crop padding the kernels can index safely: ``>= 0``, and below the image size with reflect."""
    if crop_padding < 0:
        raise ValueError(f"crop_padding must be >= 0, got {crop_padding}")
    if reflect and crop_padding >= min(H, W):
        raise ValueError(f"crop_padding={crop_padding} with reflect padding must be smaller than the image ({H}, {W})")


def mix_images_backward_kernel(
    grad_clean: torch.Tensor | None,
    grad_mix: torch.Tensor | None,
    perm: torch.Tensor,
    lam: torch.Tensor,
    box: torch.Tensor,
    is_cutmix: torch.Tensor,
    offset: torch.Tensor | None,
    flip: torch.Tensor | None,
    crop_padding: int,
    reflect: bool,
    in_dtype: torch.dtype,
    channels_last: bool,
) -> torch.Tensor:
    """``sem_fast_triton::mix_images_backward`` (schema: `sem_fast.ops.schema`): the inverse
    permutation (when ``grad_mix`` is given) and one launch of `_mix_backward_kernel`."""
    some = grad_clean if grad_clean is not None else grad_mix
    B, C, H, W = some.shape
    _check_batch(B)
    perm, lam, box, is_cutmix, offset, flip = _contiguous(perm, lam, box, is_cutmix, offset, flip)
    grad = torch.empty((B, C, H, W), dtype=in_dtype, device=some.device, memory_format=memory_format(channels_last))
    has_gc, has_gm = grad_clean is not None, grad_mix is not None
    gc = grad_clean if has_gc else grad
    gm = grad_mix if has_gm else grad
    inv = inverse_permutation(perm) if has_gm else perm
    augment = offset is not None
    if augment:
        _check_padding(crop_padding, reflect, H, W)
    dense = not augment and all(
        _dense_like(t.stride(), C, H, W, channels_last) for t in (grad_clean, grad_mix) if t is not None
    )
    g = geometry(C, H, W, in_dtype, some.device, _REFLECT_BACKWARD_ELEMENTS if reflect and augment else _MAX_THREAD_ELEMENTS)
    launch(_mix_backward_kernel)[(g.tiles, B)](
        gc, *gc.stride(), gm, *gm.stride(), grad,
        inv, lam, box, is_cutmix, offset if augment else box, flip if augment else is_cutmix,
        B, H, W, crop_padding if augment else 0, *g.args(), 9 if reflect and augment else 1,
        CHANNELS_LAST=channels_last, DENSE=dense,
        HAS_GC=has_gc, HAS_GM=has_gm, AUGMENT=augment, REFLECT=reflect and augment,
        INT64=_needs_int64(gc, gm, grad), **g.options(C, W),
    )  # fmt: skip
    return grad


register_kernels({"mix_images": mix_images_kernel, "mix_images_backward": mix_images_backward_kernel})
