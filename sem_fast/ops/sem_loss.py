"""Fused SEM loss: mixed cross-entropy with label smoothing plus the SEM squared error, in Triton.

    ce  = mean_b [ lam_b * CE(logits_b, y_b) + (1 - lam_b) * CE(logits_b, y_perm[b]) ]   (smoothed)
    sem = mean or per-sample sum of (z_mix - t)**2,  t_b = lam_b * z_b + (1 - lam_b) * z_perm[b]
    loss = ce + gamma * sem

exactly as `sem_fast.reference.sem_loss`. Modelled on Liger-Kernel's cross-entropy: one
program per block of rows runs an online logsumexp over the classes in blocks (fp32, any K),
reads the two label logits directly (no one-hot), gathers the SEM target from ``z_clean`` and
``z_clean[perm]`` in-kernel (never materialized), and, when a gradient will be needed, writes
the gradients of ``ce`` and ``sem`` in the same pass (fp32, true-class terms folded in before
any rounding). A single-program kernel sums the per-row terms in a fixed order (deterministic,
no atomics). The backward only scales the stored gradients by the incoming ones and, when
``detach_target`` is False, gathers ``dz_clean`` through the inverse permutation.

Layout of this file: kernels, launchers, the ``sem_fast::sem_loss`` /
``sem_fast::sem_loss_backward`` custom ops with fake implementations and autograd, then the
public `sem_loss` and the unchecked `sem_loss_unchecked` used by the backend registry.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from sem_fast._checks import check_features, check_fields, check_labels, check_loss_args, check_tensor
from sem_fast.config import SEMConfig
from sem_fast.ops._utils import (
    INTERPRETER_TILE,
    cast_to,
    interpreted,
    inverse_permutation,
    num_warps_for,
)
from sem_fast.sampling import MixDraw

#: Largest tile (rows x columns) a program holds at once on a GPU, and its elements per thread:
#: 4096 = 16 warps x 32 threads x 8. ptxas -v for sm_90 reports at most 128 registers and no
#: spills for the tiles this gives (8192 spilled), e.g. 64 registers at B = 512, K = 1000 on an
#: H100 (2 rows x 1024 columns, 8 warps). K above 4096 loops over blocks: registers and shared
#: memory do not grow with K. Not yet timed on a GPU.
_GPU_TILE = 4096
_PER_THREAD = 8

#: Lanes of the single-program reduction of the per-row terms: 1024 = 4 warps x 8 per thread.
_REDUCE_BLOCK = 1024


# ----------------------------------------------------------------------------- kernels


@triton.jit
def _logits_tile(logits_ptr, rows, row_mask, cols, K, s_lb, s_lk):
    """fp32 ``(BLOCK_B, BLOCK_K)`` tile of logits, -inf in columns past ``K`` (and 0 in rows
    past ``B``, so that padded rows stay finite); also returns the column mask."""
    col_mask = cols < K
    x = tl.load(
        logits_ptr + rows[:, None] * s_lb + cols[None, :] * s_lk,
        mask=row_mask[:, None] & col_mask[None, :],
        other=0.0,
    ).to(tl.float32)
    return tl.where(col_mask[None, :], x, float("-inf")), col_mask


@triton.jit
def _store_dlogits(
    dl_ptr, rows, row_mask, cols, col_mask, x, lse, y, y_partner, lam, bad, K, smoothing, inv_B,
):
    """Unit gradient ``(softmax - y~) / B`` of one tile, ``y~`` the mixed smoothed target,
    built from the two label indices (no dense one-hot); NaN rows where a label is invalid."""
    p = tl.exp(x - lse[:, None])
    own = tl.where(cols[None, :] == y[:, None], lam[:, None], 0.0)
    partner = tl.where(cols[None, :] == y_partner[:, None], 1.0 - lam[:, None], 0.0)
    g = (p - (1.0 - smoothing) * (own + partner) - smoothing / K) * inv_B
    g = tl.where(bad[:, None], float("nan"), g)
    tl.store(dl_ptr + rows[:, None] * K + cols[None, :], g, mask=row_mask[:, None] & col_mask[None, :])


@triton.jit
def _sem_loss_forward_kernel(
    logits_ptr, s_lb, s_lk,
    zm_ptr, s_mb, s_md,
    zc_ptr, s_cb, s_cd,
    labels_ptr, s_y,
    perm_ptr, lam_ptr,
    ce_rows_ptr, sem_rows_ptr, dl_ptr, dz_ptr,
    B, K, D, smoothing, inv_B, sem_grad_scale,
    HAS_SEM: tl.constexpr, GRAD: tl.constexpr, ONE_K_BLOCK: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """Per-row mixed CE and SEM squared error of ``BLOCK_B`` rows, and their unit gradients.

    logits_ptr (B, K), zm_ptr (B, D) z_mix, zc_ptr (B, D) z_clean (if ``HAS_SEM``): fp32|bf16|
        fp16 with row/column strides ``s_*b``/``s_*k|d``. labels_ptr (B,) int64|int32, stride
        ``s_y``. perm_ptr (B,) int64, lam_ptr (B,) fp32: the MixDraw.
    ce_rows_ptr, sem_rows_ptr: (B,) fp32 outputs, the per-row CE and sum over D of the squared
        error (``sem_rows`` if ``HAS_SEM``).
    dl_ptr (B, K), dz_ptr (B, D): contiguous fp32 outputs (if ``GRAD``): d ce / d logits and
        d sem / d z_mix (``= sem_grad_scale * (z_mix - t)``).
    smoothing: label smoothing; inv_B: 1 / B. ONE_K_BLOCK: ``K <= BLOCK_K``, the logits tile is
        kept in registers between the logsumexp and the gradient.
    Labels outside ``[0, K)`` or ``perm`` outside ``[0, B)`` are never read through; their rows
    come out NaN.
    Grid: ``cdiv(B, BLOCK_B)`` programs.
    """
    rows = (tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    row_mask = rows < B
    y = tl.load(labels_ptr + rows * s_y, mask=row_mask, other=0).to(tl.int64)
    q = tl.load(perm_ptr + rows, mask=row_mask, other=0)
    q_ok = (q >= 0) & (q < B)
    q = tl.where(q_ok, q, 0)
    y_partner = tl.load(labels_ptr + q * s_y, mask=row_mask & q_ok, other=-1).to(tl.int64)
    lam = tl.load(lam_ptr + rows, mask=row_mask, other=1.0)
    y_ok = (y >= 0) & (y < K)
    yp_ok = (y_partner >= 0) & (y_partner < K)
    bad = ~(y_ok & yp_ok)
    x_y = tl.load(logits_ptr + rows * s_lb + y * s_lk, mask=row_mask & y_ok, other=float("nan")).to(tl.float32)
    x_yp = tl.load(logits_ptr + rows * s_lb + y_partner * s_lk, mask=row_mask & yp_ok, other=float("nan"))
    x_yp = x_yp.to(tl.float32)

    # Online logsumexp (Milakov & Gimelshein 2018) and the row sum of logits (for smoothing).
    if ONE_K_BLOCK:
        cols = tl.arange(0, BLOCK_K)
        x, col_mask = _logits_tile(logits_ptr, rows, row_mask, cols, K, s_lb, s_lk)
        m = tl.max(x, 1)
        d = tl.sum(tl.exp(x - m[:, None]), 1)
        x_sum = tl.sum(tl.where(col_mask[None, :], x, 0.0), 1)
    else:
        m = tl.full([BLOCK_B], float("-inf"), tl.float32)
        d = tl.zeros([BLOCK_B], tl.float32)
        x_sum = tl.zeros([BLOCK_B], tl.float32)
        for k0 in range(0, K, BLOCK_K):
            cols = k0 + tl.arange(0, BLOCK_K)
            x, col_mask = _logits_tile(logits_ptr, rows, row_mask, cols, K, s_lb, s_lk)
            m_new = tl.maximum(m, tl.max(x, 1))
            d = d * tl.exp(m - m_new) + tl.sum(tl.exp(x - m_new[:, None]), 1)
            x_sum += tl.sum(tl.where(col_mask[None, :], x, 0.0), 1)
            m = m_new
    lse = m + tl.log(d)
    # CE against (1 - eps) * (lam * onehot(y) + (1 - lam) * onehot(y')) + eps / K.
    hard = lam * (lse - x_y) + (1.0 - lam) * (lse - x_yp)
    ce = (1.0 - smoothing) * hard + smoothing * (lse - x_sum / K)
    tl.store(ce_rows_ptr + rows, ce, mask=row_mask)

    if GRAD:
        if ONE_K_BLOCK:
            _store_dlogits(dl_ptr, rows, row_mask, cols, col_mask, x, lse, y, y_partner, lam, bad, K, smoothing, inv_B)
        else:
            for k0 in range(0, K, BLOCK_K):
                cols = k0 + tl.arange(0, BLOCK_K)
                x, col_mask = _logits_tile(logits_ptr, rows, row_mask, cols, K, s_lb, s_lk)
                _store_dlogits(
                    dl_ptr, rows, row_mask, cols, col_mask, x, lse, y, y_partner, lam, bad, K, smoothing, inv_B
                )

    if HAS_SEM:
        acc = tl.zeros([BLOCK_B], tl.float32)
        for d0 in range(0, D, BLOCK_D):
            d_cols = d0 + tl.arange(0, BLOCK_D)
            mask = row_mask[:, None] & (d_cols < D)[None, :]
            zm = tl.load(zm_ptr + rows[:, None] * s_mb + d_cols[None, :] * s_md, mask=mask, other=0.0).to(tl.float32)
            zc = tl.load(zc_ptr + rows[:, None] * s_cb + d_cols[None, :] * s_cd, mask=mask, other=0.0).to(tl.float32)
            zp = tl.load(zc_ptr + q[:, None] * s_cb + d_cols[None, :] * s_cd, mask=mask & q_ok[:, None], other=0.0)
            zp = tl.where(q_ok[:, None], zp.to(tl.float32), float("nan"))
            t = lam[:, None] * zc + (1.0 - lam[:, None]) * zp
            diff = tl.where(mask, zm - t, 0.0)
            acc += tl.sum(diff * diff, 1)
            if GRAD:
                tl.store(dz_ptr + rows[:, None] * D + d_cols[None, :], diff * sem_grad_scale, mask=mask)
        tl.store(sem_rows_ptr + rows, acc, mask=row_mask)


@triton.jit
def _reduce_kernel(
    ce_rows_ptr, sem_rows_ptr, loss_ptr, ce_ptr, sem_ptr, B, ce_count, sem_count, gamma,
    HAS_SEM: tl.constexpr, BLOCK: tl.constexpr,
):
    """One program: ``ce = sum(ce_rows) / ce_count``, ``sem = sum(sem_rows) / sem_count``
    (0 without ``HAS_SEM``), ``loss = ce + gamma * sem``; all ``() fp32``, fixed summation order."""
    ce_acc = tl.zeros([BLOCK], tl.float32)
    sem_acc = tl.zeros([BLOCK], tl.float32)
    for start in range(0, B, BLOCK):
        idx = start + tl.arange(0, BLOCK)
        ce_acc += tl.load(ce_rows_ptr + idx, mask=idx < B, other=0.0)
        if HAS_SEM:
            sem_acc += tl.load(sem_rows_ptr + idx, mask=idx < B, other=0.0)
    ce = tl.sum(ce_acc, 0) / ce_count
    sem = tl.sum(sem_acc, 0) / sem_count
    tl.store(ce_ptr, ce)
    tl.store(sem_ptr, sem)
    tl.store(loss_ptr, ce + gamma * sem)


@triton.jit
def _sem_loss_backward_kernel(
    g_loss_ptr, g_ce_ptr, g_sem_ptr,
    dl_unit_ptr, dz_unit_ptr, inv_ptr, lam_ptr,
    dlogits_ptr, dz_mix_ptr, dz_clean_ptr,
    B, K, D, gamma,
    HAS_G_LOSS: tl.constexpr, HAS_G_CE: tl.constexpr, HAS_G_SEM: tl.constexpr,
    LOGITS: tl.constexpr, Z_MIX: tl.constexpr, Z_CLEAN: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """Scale the forward's unit gradients by the incoming ones, for ``BLOCK_B`` rows.

    g_*_ptr: () gradients of loss, ce, sem (each used if ``HAS_G_*``); ce gets
        ``g_loss + g_ce``, sem gets ``gamma * g_loss + g_sem``.
    dl_unit_ptr (B, K), dz_unit_ptr (B, D): fp32 unit gradients from the forward.
    inv_ptr (B,) int64: inverse of ``perm`` (used if ``Z_CLEAN``; -1 holes give NaN rows).
    lam_ptr (B,) fp32. dlogits_ptr (B, K), dz_mix_ptr, dz_clean_ptr (B, D): contiguous outputs
        in the inputs' dtypes (each written if ``LOGITS`` / ``Z_MIX`` / ``Z_CLEAN``), with
        ``dz_clean[k] = -(lam[k] * u[k] + (1 - lam[s]) * u[s]) * g_sem``, ``s = inv[k]``.
    Grid: ``cdiv(B, BLOCK_B)`` programs.
    """
    g_ce = 0.0
    g_sem = 0.0
    if HAS_G_LOSS:
        g_loss = tl.load(g_loss_ptr).to(tl.float32)
        g_ce += g_loss
        g_sem += gamma * g_loss
    if HAS_G_CE:
        g_ce += tl.load(g_ce_ptr).to(tl.float32)
    if HAS_G_SEM:
        g_sem += tl.load(g_sem_ptr).to(tl.float32)
    rows = (tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    row_mask = rows < B
    if LOGITS:
        for k0 in range(0, K, BLOCK_K):
            k_cols = k0 + tl.arange(0, BLOCK_K)
            k_mask = row_mask[:, None] & (k_cols < K)[None, :]
            k_offs = rows[:, None] * K + k_cols[None, :]
            u = tl.load(dl_unit_ptr + k_offs, mask=k_mask, other=0.0)
            tl.store(dlogits_ptr + k_offs, cast_to(u * g_ce, dlogits_ptr.dtype.element_ty), mask=k_mask)
    if Z_MIX or Z_CLEAN:
        if Z_CLEAN:
            s = tl.load(inv_ptr + rows, mask=row_mask, other=0)
            s_ok = (s >= 0) & (s < B)
            s = tl.where(s_ok, s, 0)
            lam = tl.load(lam_ptr + rows, mask=row_mask, other=1.0)
            lam_s = tl.load(lam_ptr + s, mask=row_mask, other=1.0)
        for d0 in range(0, D, BLOCK_D):
            d_cols = d0 + tl.arange(0, BLOCK_D)
            mask = row_mask[:, None] & (d_cols < D)[None, :]
            offs = rows[:, None] * D + d_cols[None, :]
            u = tl.load(dz_unit_ptr + offs, mask=mask, other=0.0)
            if Z_MIX:
                tl.store(dz_mix_ptr + offs, cast_to(u * g_sem, dz_mix_ptr.dtype.element_ty), mask=mask)
            if Z_CLEAN:
                u_s = tl.load(dz_unit_ptr + s[:, None] * D + d_cols[None, :], mask=mask, other=0.0)
                g = -(lam[:, None] * u + (1.0 - lam_s[:, None]) * u_s) * g_sem
                g = tl.where(s_ok[:, None], g, float("nan"))
                tl.store(dz_clean_ptr + offs, cast_to(g, dz_clean_ptr.dtype.element_ty), mask=mask)


# ----------------------------------------------------------------------------- launchers


def _sm_count(device: torch.device) -> int:
    """Number of SMs (CUs on ROCm) of CUDA ``device``: how many programs fill it once."""
    return _sm_count_of(device.index if device.index is not None else torch.cuda.current_device())


@functools.cache
def _sm_count_of(device_index: int) -> int:
    """A host query (no sync), made once per device."""
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def _pow2_floor(n: int) -> int:
    """The largest power of two ``<= max(n, 1)``."""
    return 1 << (max(n, 1).bit_length() - 1)


def _geometry(B: int, K: int, D: int, device: torch.device) -> tuple[int, int, int, int]:
    """``(BLOCK_B, BLOCK_K, BLOCK_D, num_warps)`` for a ``(B, K)`` / ``(B, D)`` problem.

    Columns: all of K (or D) in one block up to the tile cap (`_GPU_TILE`, or
    `INTERPRETER_TILE` in the interpreter), then loops over blocks. Rows per program: on a GPU,
    as many as still leave one program per SM (at training batch sizes the loss is bound by
    load latency, so spreading rows over the SMs beats packing them), within the tile cap; in
    the interpreter, every row that fits the tile (program count is the cost there).
    """
    if interpreted(device):
        tile, rows = INTERPRETER_TILE, triton.next_power_of_2(B)
    else:
        tile, rows = _GPU_TILE, _pow2_floor(B // _sm_count(device))
    block_k = min(triton.next_power_of_2(K), tile)
    block_b = max(1, min(rows, tile // block_k))
    block_d = min(triton.next_power_of_2(D), max(1, tile // block_b))
    return block_b, block_k, block_d, num_warps_for(block_b * max(block_k, block_d), _PER_THREAD)


def _launch_forward(
    logits: torch.Tensor,
    z_mix: torch.Tensor,
    z_clean: torch.Tensor | None,
    labels: torch.Tensor,
    perm: torch.Tensor,
    lam: torch.Tensor,
    gamma: float,
    label_smoothing: float,
    sem_mean: bool,
    grad: bool,
) -> tuple[torch.Tensor, ...]:
    (B, K), D = logits.shape, z_mix.shape[1]
    device = logits.device
    perm, lam = perm.contiguous(), lam.contiguous()
    has_sem = z_clean is not None
    f32 = dict(dtype=torch.float32, device=device)
    ce_rows = torch.empty(B, **f32)
    sem_rows = torch.empty(B, **f32) if has_sem else ce_rows
    dl_unit = torch.empty(B, K, **f32) if grad else torch.empty(0, **f32)
    dz_unit = torch.empty(B, D, **f32) if grad and has_sem else torch.empty(0, **f32)
    sem_count = float(B * D if sem_mean else B)
    zc = z_clean if has_sem else z_mix
    block_b, block_k, block_d, warps = _geometry(B, K, D, device)
    _sem_loss_forward_kernel[(triton.cdiv(B, block_b),)](
        logits, *logits.stride(), z_mix, *z_mix.stride(), zc, *zc.stride(), labels, labels.stride(0),
        perm, lam, ce_rows, sem_rows, dl_unit, dz_unit,
        B, K, D, label_smoothing, 1.0 / B, 2.0 / sem_count,
        HAS_SEM=has_sem, GRAD=grad, ONE_K_BLOCK=K <= block_k,
        BLOCK_B=block_b, BLOCK_K=block_k, BLOCK_D=block_d, num_warps=warps,
    )
    loss, ce, sem = (torch.empty((), **f32) for _ in range(3))
    _reduce_kernel[(1,)](
        ce_rows, sem_rows, loss, ce, sem, B, float(B), sem_count, gamma,
        HAS_SEM=has_sem, BLOCK=_REDUCE_BLOCK, num_warps=num_warps_for(_REDUCE_BLOCK, _PER_THREAD),
    )
    return loss, ce, sem, dl_unit, dz_unit


def _launch_backward(
    grad_loss: torch.Tensor | None,
    grad_ce: torch.Tensor | None,
    grad_sem: torch.Tensor | None,
    dl_unit: torch.Tensor,
    dz_unit: torch.Tensor,
    perm: torch.Tensor,
    lam: torch.Tensor,
    gamma: float,
    logits_dtype: torch.dtype | None,
    z_mix_dtype: torch.dtype | None,
    z_clean_dtype: torch.dtype | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    (B, K), D = dl_unit.shape, (dz_unit.shape[1] if dz_unit.dim() == 2 else 1)
    device = dl_unit.device
    perm, lam = perm.contiguous(), lam.contiguous()

    def out(shape, dtype):
        return torch.empty(shape, dtype=dtype, device=device) if dtype is not None else torch.empty(0, device=device)

    dlogits, dz_mix, dz_clean = out((B, K), logits_dtype), out((B, D), z_mix_dtype), out((B, D), z_clean_dtype)
    inv = inverse_permutation(perm) if z_clean_dtype is not None else perm
    block_b, block_k, block_d, warps = _geometry(B, K, D, device)
    _sem_loss_backward_kernel[(triton.cdiv(B, block_b),)](
        grad_loss, grad_ce, grad_sem, dl_unit, dz_unit, inv, lam, dlogits, dz_mix, dz_clean,
        B, K, D, gamma,
        HAS_G_LOSS=grad_loss is not None, HAS_G_CE=grad_ce is not None, HAS_G_SEM=grad_sem is not None,
        LOGITS=logits_dtype is not None, Z_MIX=z_mix_dtype is not None, Z_CLEAN=z_clean_dtype is not None,
        BLOCK_B=block_b, BLOCK_K=block_k, BLOCK_D=block_d, num_warps=warps,
    )
    return dlogits, dz_mix, dz_clean


# ----------------------------------------------------------------------------- custom ops


@torch.library.custom_op("sem_fast::sem_loss", mutates_args=())
def _sem_loss_op(
    logits: torch.Tensor,
    z_mix: torch.Tensor,
    z_clean: torch.Tensor | None,
    labels: torch.Tensor,
    perm: torch.Tensor,
    lam: torch.Tensor,
    gamma: float,
    label_smoothing: float,
    sem_mean: bool,
    detach_target: bool,
    grad: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(loss, ce, sem, dce/dlogits (B, K), dsem/dz_mix (B, D))``, the last two fp32 and
    saved for the backward (empty tensors when ``grad`` is False or without ``z_clean``).

    Called directly (``torch.ops.sem_fast.sem_loss``) it checks every tensor's metadata (no
    values: no sync), so no argument can make the kernel read out of bounds."""
    if check_tensor("labels", labels).dim() != 1:
        raise ValueError(f"labels must have shape (B,), got {tuple(labels.shape)}")
    B = labels.shape[0]
    check_labels(labels, B, labels.device, num_classes=None)
    check_features(logits, z_mix, z_clean, B, labels.device)
    check_fields("draw", {"perm": perm, "lam": lam}, B, labels.device)
    return _launch_forward(logits, z_mix, z_clean, labels, perm, lam, gamma, label_smoothing, sem_mean, grad)


@_sem_loss_op.register_fake
def _(logits, z_mix, z_clean, labels, perm, lam, gamma, label_smoothing, sem_mean, detach_target, grad):
    (B, K), D = logits.shape, z_mix.shape[1]
    scalar = logits.new_empty((), dtype=torch.float32)
    dl_unit = logits.new_empty((B, K) if grad else (0,), dtype=torch.float32)
    dz_unit = logits.new_empty((B, D) if grad and z_clean is not None else (0,), dtype=torch.float32)
    return scalar, torch.empty_like(scalar), torch.empty_like(scalar), dl_unit, dz_unit


@torch.library.custom_op("sem_fast::sem_loss_backward", mutates_args=())
def _sem_loss_backward_op(
    grad_loss: torch.Tensor | None,
    grad_ce: torch.Tensor | None,
    grad_sem: torch.Tensor | None,
    dl_unit: torch.Tensor,
    dz_unit: torch.Tensor,
    perm: torch.Tensor,
    lam: torch.Tensor,
    gamma: float,
    logits_dtype: torch.dtype | None,
    z_mix_dtype: torch.dtype | None,
    z_clean_dtype: torch.dtype | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(dlogits, dz_mix, dz_clean)`` in the given dtypes; each is an empty tensor when its
    dtype is None (that input needs no gradient)."""
    return _launch_backward(
        grad_loss, grad_ce, grad_sem, dl_unit, dz_unit, perm, lam, gamma, logits_dtype, z_mix_dtype, z_clean_dtype
    )


@_sem_loss_backward_op.register_fake
def _(grad_loss, grad_ce, grad_sem, dl_unit, dz_unit, perm, lam, gamma, logits_dtype, z_mix_dtype, z_clean_dtype):
    (B, K), D = dl_unit.shape, (dz_unit.shape[1] if dz_unit.dim() == 2 else 1)

    def out(shape, dtype):
        return dl_unit.new_empty(shape, dtype=dtype) if dtype is not None else dl_unit.new_empty(0)

    return out((B, K), logits_dtype), out((B, D), z_mix_dtype), out((B, D), z_clean_dtype)


def _setup_context(ctx, inputs, output) -> None:
    logits, z_mix, z_clean, _, perm, lam, gamma, _, _, detach_target, _ = inputs
    ctx.save_for_backward(output[3], output[4], perm, lam)
    ctx.gamma = gamma
    # z_clean gets no gradient through a detached target (nor without a SEM term).
    ctx.dtypes = (logits.dtype, z_mix.dtype, None if z_clean is None or detach_target else z_clean.dtype)
    ctx.has_sem = z_clean is not None
    ctx.mark_non_differentiable(output[3], output[4])
    # Unused outputs (ce and sem are usually only logged) get None, not a materialized zero.
    ctx.set_materialize_grads(False)


def _backward(ctx, grad_loss, grad_ce, grad_sem, _grad_dl_unit, _grad_dz_unit):
    dl_unit, dz_unit, perm, lam = ctx.saved_tensors
    need_logits, need_z_mix, need_z_clean = ctx.needs_input_grad[:3]
    reaches_ce = grad_loss is not None or grad_ce is not None
    reaches_sem = ctx.has_sem and (grad_loss is not None or grad_sem is not None)
    logits_dtype, z_mix_dtype, z_clean_dtype = ctx.dtypes
    # A dtype of None: that input gets no gradient (not needed, or only through an unused output).
    logits_dtype = logits_dtype if need_logits and reaches_ce else None
    z_mix_dtype = z_mix_dtype if need_z_mix and reaches_sem else None
    z_clean_dtype = z_clean_dtype if need_z_clean and reaches_sem else None
    dtypes = (logits_dtype, z_mix_dtype, z_clean_dtype)
    if dtypes == (None, None, None):
        return (None,) * 11
    grads = torch.ops.sem_fast.sem_loss_backward(
        grad_loss, grad_ce, grad_sem, dl_unit, dz_unit, perm, lam, ctx.gamma, *dtypes
    )
    return tuple(g if dtype is not None else None for g, dtype in zip(grads, dtypes)) + (None,) * 8


_sem_loss_op.register_autograd(_backward, setup_context=_setup_context)


# ----------------------------------------------------------------------------- public API


def sem_loss(
    logits: torch.Tensor,
    z_mix: torch.Tensor,
    z_clean: torch.Tensor | None,
    labels: torch.Tensor,
    draw: MixDraw,
    cfg: SEMConfig,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mixed cross-entropy plus ``cfg.gamma`` times the SEM term, fused (Triton backend).

    Same contract as `sem_fast.reference.sem_loss`, whose argument checks it runs:

    Args:
        logits: ``(B, K)`` fp32|bf16|fp16, ``h(g(x~))``.
        z_mix: ``(B, D)`` fp32|bf16|fp16, ``g(x~)``.
        z_clean: ``(B, D)`` fp32|bf16|fp16, ``g(x)``, or ``None``: no SEM term (``sem`` is 0).
        labels: ``(B,)`` int64|int32 in ``[0, K)``.
        draw: the `MixDraw` (``perm`` and ``lam`` are used).
        cfg: ``gamma``, ``sem_reduction``, ``detach_target``, ``label_smoothing`` are used.

    Returns:
        ``(loss, ce, sem)``, each ``() float32``, ``loss = ce + cfg.gamma * sem``;
        differentiable w.r.t. ``logits``, ``z_mix`` and (unless ``cfg.detach_target``) ``z_clean``.
    """
    check_loss_args(logits, z_mix, z_clean, labels, draw, cfg)
    return sem_loss_unchecked(logits, z_mix, z_clean, labels, draw, cfg)


def sem_loss_unchecked(
    logits: torch.Tensor,
    z_mix: torch.Tensor,
    z_clean: torch.Tensor | None,
    labels: torch.Tensor,
    draw: MixDraw,
    cfg: SEMConfig,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`sem_loss` for arguments already checked (the backend registry's entry point)."""
    differentiable = (logits, z_mix) if z_clean is None or cfg.detach_target else (logits, z_mix, z_clean)
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in differentiable)
    loss, ce, sem, _, _ = torch.ops.sem_fast.sem_loss(
        logits,
        z_mix,
        z_clean,
        labels,
        draw.perm,
        draw.lam,
        float(cfg.gamma),
        float(cfg.label_smoothing),
        cfg.sem_reduction == "mean",
        cfg.detach_target,
        grad,
    )
    return loss, ce, sem
