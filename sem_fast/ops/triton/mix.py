"""Fused image mix: normalize, crop/flip augment and mixup / CutMix a batch in one Triton pass.

One kernel reads each output pixel's source from the raw batch (``(B, H, W, C) uint8`` as a
loader produces it, or ``(B, C, H, W)`` float in any memory format) and writes both the clean
and the mixed image, so the batch goes from the dataset to the network input in a single pass:

    clean[b] = normalize(augment_b(x[b]))
    mix[b]   = lam[b] * clean[b] + (1 - lam[b]) * clean[perm[b]]            (mixup)
    mix[b]   = clean[b] with draw.box[b] taken from clean[perm[b]]          (CutMix)

exactly as `sem_fast.reference.mix_images`. The op is linear in float input, so it is
differentiable: the backward kernel gathers, for each input pixel of sample ``k``, the output
gradients of ``k`` and of the sample whose partner is ``k`` (through the inverse permutation,
no atomics), and sums over the crop/flip positions that read the pixel.

Layout of this file: Triton kernels, then their launchers, registered as the CPU (interpreter)
and CUDA kernels of the ops ``sem_fast_triton::mix_images`` and ``mix_images_backward``, whose
schemas, fake kernels and autograd `sem_fast.ops.schema` defines for every backend.
"""

from __future__ import annotations

import functools

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
    num_warps_for,
    register_kernels,
    traced_constant,
    tracing,
)

#: Element offsets at or above this do not fit a signed 32-bit integer; kernels then compute
#: addresses in int64 (see `_needs_int64`).
_INT32_SPAN = 2**31

#: Elements per program on a GPU, and per thread: 512 = 4 warps x 32 threads x 4 elements. At 8
#: per thread (1024) ptxas -v for sm_90 reports 134-138 registers for the forward kernel (under
#: 20% occupancy for a bandwidth-bound kernel) and 64 KB of spills for the reflect-padding
#: backward; at 4, 64-80 registers (forward) and at most 240 without spills (backward). Not yet
#: timed on a GPU.
_GPU_BLOCK = 512
_PER_THREAD = 4


# ----------------------------------------------------------------------------- kernels


@triton.jit
def _program_elements(C, H, W, CHANNELS_LAST: tl.constexpr, INT64: tl.constexpr, BLOCK: tl.constexpr):
    """The ``BLOCK`` elements of one sample this program covers (grid ``B * cdiv(C*H*W, BLOCK)``):
    ``(sample, element index e in the sample's NHWC/NCHW order, valid, c, i, j)``, with
    ``c, i, j`` in int64 when ``INT64``."""
    pid = tl.program_id(0)
    per_sample = C * H * W
    blocks = tl.cdiv(per_sample, BLOCK)
    b = pid // blocks
    e = (pid % blocks) * BLOCK + tl.arange(0, BLOCK)
    valid = e < per_sample
    if CHANNELS_LAST:
        c = e % C
        j = (e // C) % W
        i = e // (C * W)
    else:
        j = e % W
        i = (e // W) % H
        c = e // (H * W)
    if INT64:
        c = c.to(tl.int64)
        i = i.to(tl.int64)
        j = j.to(tl.int64)
    return b, e, valid, c, i, j


@triton.jit
def _padded_source(k, shift, P, N, REFLECT: tl.constexpr):
    """Source index along one axis of output index ``k`` cropped at ``shift`` from the input
    padded by ``P`` (size ``N``): ``(index, inside)``; ``inside`` is False where the padded
    pixel is a zero (``REFLECT`` False) or, for offsets outside ``[0, 2P]``, off the image."""
    s = k + shift - P
    if REFLECT:
        s = tl.where(s < 0, -s, s)
        s = tl.where(s >= N, 2 * (N - 1) - s, s)
    return s, (s >= 0) & (s < N)


@triton.jit
def _load_source(
    x_ptr, sample, c, i, j, sxb, sxc, sxh, sxw, stats_ptr, C, H, W, P, dy, dx, flip, mask,
    NORMALIZE: tl.constexpr, AUGMENT: tl.constexpr, REFLECT: tl.constexpr,
):
    """fp32 value of the clean image of ``sample`` at channel ``c``, output pixel ``(i, j)``:
    the augmented source pixel (zero padding is 0 in the input's units), normalized for uint8.
    Offsets outside ``[0, 2P]`` give NaN. ``sample`` is int64 (the batch offset may pass 2**31)."""
    si = i
    sj = j
    inside = mask
    if AUGMENT:
        jj = tl.where(flip, W - 1 - j, j)
        si, in_rows = _padded_source(i, dy, P, H, REFLECT)
        sj, in_cols = _padded_source(jj, dx, P, W, REFLECT)
        inside = mask & in_rows & in_cols
    v = tl.load(x_ptr + sample * sxb + c * sxc + si * sxh + sj * sxw, mask=inside, other=0).to(tl.float32)
    if NORMALIZE:
        mean = tl.load(stats_ptr + c, mask=mask, other=0.0)
        std = tl.load(stats_ptr + C + c, mask=mask, other=1.0)
        v = (v / 255.0 - mean) / std
    if AUGMENT:
        offset_ok = (dy >= 0) & (dy <= 2 * P) & (dx >= 0) & (dx <= 2 * P)
        v = tl.where(offset_ok, v, float("nan"))
    return v


@triton.jit
def _mix_forward_kernel(
    x_ptr, sxb, sxc, sxh, sxw,
    clean_ptr, mix_ptr,
    perm_ptr, lam_ptr, box_ptr, cutmix_ptr, offset_ptr, flip_ptr, stats_ptr,
    B, C, H, W, P,
    CHANNELS_LAST: tl.constexpr, NORMALIZE: tl.constexpr, AUGMENT: tl.constexpr,
    REFLECT: tl.constexpr, MIX: tl.constexpr, INT64: tl.constexpr, BLOCK: tl.constexpr,
):
    """Clean and mixed images of one sample, ``BLOCK`` output elements per program.

    x_ptr: input, read as logical ``(B, C, H, W)`` through strides ``sxb, sxc, sxh, sxw``
        (elements; uint8 NHWC input passes its strides permuted).
    clean_ptr, mix_ptr: dense ``(B, C, H, W)`` outputs in NHWC (``CHANNELS_LAST``) or NCHW
        order, in the output dtype; ``mix_ptr`` unused unless ``MIX``.
    perm_ptr (B,) int64, lam_ptr (B,) fp32, box_ptr (B, 4) int32 (y0, y1, x0, x1),
    cutmix_ptr (B,) bool: the MixDraw. offset_ptr (B, 2) int32 (dy, dx), flip_ptr (B,) bool:
        the AugmentDraw (used if ``AUGMENT``). stats_ptr: (2, C) fp32 mean and std rows
        (used if ``NORMALIZE``, i.e. uint8 input).
    B, C, H, W: sizes; P: crop padding.
    INT64: compute element offsets in int64 (some offset reaches 2**31).
    Grid: ``B * cdiv(C*H*W, BLOCK)`` programs; program ``pid`` covers sample ``pid // blocks``.
    """
    b, e, valid, c, i, j = _program_elements(C, H, W, CHANNELS_LAST, INT64, BLOCK)
    per_sample = C * H * W
    b64 = b.to(tl.int64)

    dy = 0
    dx = 0
    flip = False
    if AUGMENT:
        dy = tl.load(offset_ptr + 2 * b)
        dx = tl.load(offset_ptr + 2 * b + 1)
        flip = tl.load(flip_ptr + b)
    v = _load_source(x_ptr, b64, c, i, j, sxb, sxc, sxh, sxw, stats_ptr, C, H, W, P, dy, dx, flip, valid,
                     NORMALIZE, AUGMENT, REFLECT)
    out = b64 * per_sample + e
    tl.store(clean_ptr + out, cast_to(v, clean_ptr.dtype.element_ty), mask=valid)

    if MIX:
        q = tl.load(perm_ptr + b)
        perm_ok = (q >= 0) & (q < B)
        q = tl.where(perm_ok, q, 0)
        lam = tl.load(lam_ptr + b)
        cutmix = tl.load(cutmix_ptr + b)
        y0 = tl.load(box_ptr + 4 * b)
        y1 = tl.load(box_ptr + 4 * b + 1)
        x0 = tl.load(box_ptr + 4 * b + 2)
        x1 = tl.load(box_ptr + 4 * b + 3)
        in_box = (i >= y0) & (i < y1) & (j >= x0) & (j < x1)
        # CutMix reads the partner only inside the box.
        need = valid & (in_box | (cutmix == 0))
        dyq = 0
        dxq = 0
        flipq = False
        if AUGMENT:
            dyq = tl.load(offset_ptr + 2 * q)
            dxq = tl.load(offset_ptr + 2 * q + 1)
            flipq = tl.load(flip_ptr + q)
        vq = _load_source(x_ptr, q, c, i, j, sxb, sxc, sxh, sxw, stats_ptr, C, H, W, P, dyq, dxq, flipq, need,
                          NORMALIZE, AUGMENT, REFLECT)
        lerp = lam * v + (1.0 - lam) * vq
        m = tl.where(cutmix, tl.where(in_box, vq, v), lerp)
        m = tl.where(perm_ok, m, float("nan"))
        tl.store(mix_ptr + out, cast_to(m, mix_ptr.dtype.element_ty), mask=valid)


@triton.jit
def _output_grad(
    gc_ptr, sgcb, sgcc, sgch, sgcw, gm_ptr, sgmb, sgmc, sgmh, sgmw,
    k, s, s_ok, c, i, j, mask,
    lam_k, cut_k, ky0, ky1, kx0, kx1, lam_s, cut_s, sy0, sy1, sx0, sx1,
    HAS_GC: tl.constexpr, HAS_GM: tl.constexpr,
):
    """fp32 gradient w.r.t. the clean (augmented) image of sample ``k`` at ``(c, i, j)``:
    ``g_clean[k] + own_k * g_mix[k] + partner_s * g_mix[s]`` with ``s`` the sample whose
    partner is ``k``; ``own``/``partner`` are ``lam``/``1 - lam`` (mixup) or outside/inside
    the box (CutMix). Masked lanes give 0; an invalid ``s`` gives NaN."""
    g = tl.zeros(i.shape, tl.float32)
    if HAS_GC:
        g += tl.load(gc_ptr + k * sgcb + c * sgcc + i * sgch + j * sgcw, mask=mask, other=0).to(tl.float32)
    if HAS_GM:
        in_k = (i >= ky0) & (i < ky1) & (j >= kx0) & (j < kx1)
        own = tl.where(cut_k, tl.where(in_k, 0.0, 1.0), lam_k)
        g += own * tl.load(gm_ptr + k * sgmb + c * sgmc + i * sgmh + j * sgmw, mask=mask, other=0).to(tl.float32)
        in_s = (i >= sy0) & (i < sy1) & (j >= sx0) & (j < sx1)
        partner = tl.where(cut_s, tl.where(in_s, 1.0, 0.0), 1.0 - lam_s)
        from_s = tl.load(gm_ptr + s * sgmb + c * sgmc + i * sgmh + j * sgmw, mask=mask & (partner != 0.0), other=0)
        g += tl.where(s_ok, partner * from_s.to(tl.float32), float("nan"))
    return g


@triton.jit
def _candidate(r, shift, P, N, which: tl.constexpr):
    """Output index along one axis whose crop (at ``shift`` from the input padded by ``P``)
    reads input index ``r``: ``which`` 0 is the direct read, 1 the mirror of the leading pad,
    2 the mirror of the trailing pad (reflect mode only); returns ``(index, valid)``."""
    if which == 0:
        k = r + P - shift
        ok = r >= 0  # always true: the mask of this candidate is its range check alone
    elif which == 1:
        k = P - shift - r
        ok = r > 0
    else:
        k = 2 * (N - 1) - r + P - shift
        ok = r < N - 1
    return k, ok & (k >= 0) & (k < N)


@triton.jit
def _mix_backward_kernel(
    gc_ptr, sgcb, sgcc, sgch, sgcw,
    gm_ptr, sgmb, sgmc, sgmh, sgmw,
    dx_ptr, inv_ptr, lam_ptr, box_ptr, cutmix_ptr, offset_ptr, flip_ptr,
    B, C, H, W, P,
    CHANNELS_LAST: tl.constexpr, HAS_GC: tl.constexpr, HAS_GM: tl.constexpr, AUGMENT: tl.constexpr,
    REFLECT: tl.constexpr, INT64: tl.constexpr, BLOCK: tl.constexpr,
):
    """Gradient w.r.t. float input: ``BLOCK`` input elements of one sample ``k`` per program.

    gc_ptr, gm_ptr: gradients of the clean and mixed outputs, logical ``(B, C, H, W)`` with
        their strides (each used if ``HAS_GC`` / ``HAS_GM``).
    dx_ptr: dense ``(B, C, H, W)`` output in NHWC (``CHANNELS_LAST``) or NCHW order.
    inv_ptr (B,) int64: inverse of ``perm`` (-1 holes give NaN). lam_ptr, box_ptr, cutmix_ptr,
        offset_ptr, flip_ptr, P: as in `_mix_forward_kernel`.
    The input pixel ``(r, col)`` is read by the output pixels of `_candidate` (1 per axis, or 3
    with reflect padding); their gradients are summed (a gather, no atomics).
    Grid: ``B * cdiv(C*H*W, BLOCK)`` programs.
    """
    k, e, valid, c, r, col = _program_elements(C, H, W, CHANNELS_LAST, INT64, BLOCK)
    per_sample = C * H * W
    k64 = k.to(tl.int64)

    lam_k = tl.load(lam_ptr + k)
    cut_k = tl.load(cutmix_ptr + k)
    ky0 = tl.load(box_ptr + 4 * k)
    ky1 = tl.load(box_ptr + 4 * k + 1)
    kx0 = tl.load(box_ptr + 4 * k + 2)
    kx1 = tl.load(box_ptr + 4 * k + 3)
    s = tl.load(inv_ptr + k)
    s_ok = (s >= 0) & (s < B)
    s = tl.where(s_ok, s, 0)
    lam_s = tl.load(lam_ptr + s)
    cut_s = tl.load(cutmix_ptr + s)
    sy0 = tl.load(box_ptr + 4 * s)
    sy1 = tl.load(box_ptr + 4 * s + 1)
    sx0 = tl.load(box_ptr + 4 * s + 2)
    sx1 = tl.load(box_ptr + 4 * s + 3)

    if AUGMENT:
        dy = tl.load(offset_ptr + 2 * k)
        dx = tl.load(offset_ptr + 2 * k + 1)
        flip = tl.load(flip_ptr + k)
        acc = tl.zeros([BLOCK], tl.float32)
        for a in tl.static_range(3 if REFLECT else 1):
            i, row_ok = _candidate(r, dy, P, H, a)
            for bb in tl.static_range(3 if REFLECT else 1):
                q, col_ok = _candidate(col, dx, P, W, bb)
                j = tl.where(flip, W - 1 - q, q)
                acc += _output_grad(
                    gc_ptr, sgcb, sgcc, sgch, sgcw, gm_ptr, sgmb, sgmc, sgmh, sgmw,
                    k64, s, s_ok, c, i, j, valid & row_ok & col_ok,
                    lam_k, cut_k, ky0, ky1, kx0, kx1, lam_s, cut_s, sy0, sy1, sx0, sx1, HAS_GC, HAS_GM,
                )
        offset_ok = (dy >= 0) & (dy <= 2 * P) & (dx >= 0) & (dx <= 2 * P)
        acc = tl.where(offset_ok, acc, float("nan"))
    else:
        acc = _output_grad(
            gc_ptr, sgcb, sgcc, sgch, sgcw, gm_ptr, sgmb, sgmc, sgmh, sgmw,
            k64, s, s_ok, c, r, col, valid,
            lam_k, cut_k, ky0, ky1, kx0, kx1, lam_s, cut_s, sy0, sy1, sx0, sx1, HAS_GC, HAS_GM,
        )
    tl.store(dx_ptr + k64 * per_sample + e, cast_to(acc, dx_ptr.dtype.element_ty), mask=valid)


# ----------------------------------------------------------------------------- launchers (the ops' kernels)


def _block(per_sample: int, device: torch.device) -> tuple[int, int]:
    """``(BLOCK, num_warps)`` for ``per_sample = C*H*W`` elements per sample: `_GPU_BLOCK` on
    a GPU, the whole sample (up to `INTERPRETER_TILE`) in the interpreter."""
    cap = INTERPRETER_TILE if interpreted(device) else _GPU_BLOCK
    block = min(triton.next_power_of_2(per_sample), cap)
    return block, num_warps_for(block, _PER_THREAD)


def _needs_int64(*tensors: torch.Tensor | None) -> bool:
    """Whether an element offset of any of ``tensors`` (from its storage offset, through its
    strides) can reach `_INT32_SPAN`, so that kernels must index in int64."""
    for t in tensors:
        if t is None or t.numel() == 0:
            continue
        span = t.storage_offset() + sum((size - 1) * abs(stride) for size, stride in zip(t.shape, t.stride()))
        if span >= _INT32_SPAN:
            return True
    return False


def _nchw_strides(images: torch.Tensor) -> tuple[int, int, int, int]:
    """Strides of ``images`` as a logical ``(B, C, H, W)`` tensor (uint8 input is NHWC)."""
    sb, s1, s2, s3 = images.stride()
    return (sb, s3, s1, s2) if images.dtype == torch.uint8 else (sb, s1, s2, s3)


def _contiguous(*tensors: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
    """The draw tensors as the kernels index them (dense; a no-op for `sample_draw`'s)."""
    return tuple(None if t is None else t.contiguous() for t in tensors)


@functools.lru_cache(maxsize=16)
def _stats(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device) -> torch.Tensor:
    """``(2, C) float32`` rows ``mean`` and ``std`` on ``device``, made once per configuration:
    the op's only host-to-device copy, from pinned memory without a sync, and cached so that
    steady-state steps (and CUDA graph replays after a warm-up step) do none."""
    stats = torch.tensor([mean, std], dtype=torch.float32)
    if device.type == "cuda":
        return stats.pin_memory().to(device, non_blocking=True)
    return stats.to(device)


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
    check_fields("draw", {"perm": perm, "lam": lam, "box": box, "is_cutmix": is_cutmix}, B, images.device)
    if (offset is None) != (flip is None):
        raise ValueError("offset and flip must be given together (an AugmentDraw) or both be None")
    augment = offset is not None
    if augment:
        check_fields("augment", {"offset": offset, "flip": flip}, B, images.device)
    normalize = images.dtype == torch.uint8
    if normalize and not len(mean) == len(std) == C:  # the kernel reads one mean/std per channel
        raise ValueError(f"mean and std must have one value per channel ({C}), got {len(mean)} and {len(std)}")
    perm, lam, box, is_cutmix, offset, flip = _contiguous(perm, lam, box, is_cutmix, offset, flip)
    fmt = memory_format(channels_last)
    clean = torch.empty((B, C, H, W), dtype=out_dtype, device=images.device, memory_format=fmt)
    mixed = torch.empty_like(clean) if mixes else clean.new_empty(0)
    if not normalize:
        stats = lam
    elif tracing():  # made in the traced graph: the cache holds real tensors only
        stats = traced_constant([*mean, *std], images.device).view(2, C)
    else:
        stats = _stats(tuple(mean), tuple(std), images.device)
    block, warps = _block(C * H * W, images.device)
    launch(_mix_forward_kernel)[(B * triton.cdiv(C * H * W, block),)](
        images, *_nchw_strides(images), clean, mixed,
        perm, lam, box, is_cutmix,
        offset if augment else box, flip if augment else is_cutmix, stats,
        B, C, H, W, crop_padding if augment else 0,
        CHANNELS_LAST=channels_last, NORMALIZE=normalize, AUGMENT=augment, REFLECT=reflect and augment,
        MIX=mixes, INT64=_needs_int64(images, clean), BLOCK=block, num_warps=warps,
    )  # fmt: skip
    return clean, mixed


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
    perm, lam, box, is_cutmix, offset, flip = _contiguous(perm, lam, box, is_cutmix, offset, flip)
    grad = torch.empty((B, C, H, W), dtype=in_dtype, device=some.device, memory_format=memory_format(channels_last))
    has_gc, has_gm = grad_clean is not None, grad_mix is not None
    gc = grad_clean if has_gc else grad
    gm = grad_mix if has_gm else grad
    inv = inverse_permutation(perm) if has_gm else perm
    augment = offset is not None
    block, warps = _block(C * H * W, some.device)
    launch(_mix_backward_kernel)[(B * triton.cdiv(C * H * W, block),)](
        gc, *gc.stride(), gm, *gm.stride(), grad,
        inv, lam, box, is_cutmix, offset if augment else box, flip if augment else is_cutmix,
        B, C, H, W, crop_padding if augment else 0,
        CHANNELS_LAST=channels_last, HAS_GC=has_gc, HAS_GM=has_gm, AUGMENT=augment,
        REFLECT=reflect and augment, INT64=_needs_int64(gc, gm, grad), BLOCK=block, num_warps=warps,
    )  # fmt: skip
    return grad


register_kernels({"mix_images": mix_images_kernel, "mix_images_backward": mix_images_backward_kernel})
