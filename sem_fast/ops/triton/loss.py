"""Fused SEM loss: mixed cross-entropy with label smoothing plus the SEM squared error, in Triton.

    ce  = mean_b [ lam_b * CE(logits_b, y_b) + (1 - lam_b) * CE(logits_b, y_perm[b]) ]   (smoothed)
    sem = mean or per-sample sum of (z_mix - t)**2,  t_b = lam_b * z_b + (1 - lam_b) * z_perm[b]
    loss = ce + gamma * sem

exactly as `sem_fast.reference.sem_loss`. One program per block of rows runs an online
logsumexp over the classes in blocks (fp32, any K) kept *relative to the row max* (``m`` and
``log sum exp(x - m)`` apart, as ``F.cross_entropy`` does, so logits of any magnitude keep their
accuracy), reads the two label logits directly (no one-hot), and gathers the SEM target from
``z_clean`` and ``z_clean[perm]`` in-kernel (never materialized), and writes its rows' terms and
``inv[perm[b]] = b``. The last program to finish (an atomic counter elects it: `last_program`)
sums the rows' terms in a fixed order (deterministic) and checks that ``perm`` is a permutation:
one launch. The backward recomputes the softmax from the saved row statistics (no ``(B, K)``
buffer between forward and backward) and gathers ``z_clean``'s gradient through the saved
inverse permutation: one launch.

A ``perm`` that is not a permutation (a repeated or out-of-range entry; values are unchecked
under ``torch.compile``, in CUDA graphs and with ``check_values=False``) makes ``loss``, ``ce``
and (with ``z_clean``) ``sem`` NaN and every gradient NaN, as in `sem_fast.reference.sem_loss`:
the last program then writes `POISONED_STATS` into every row's statistics, which the backward
turns into NaN. Labels outside ``[0, K)`` make their rows NaN.

Layout of this file: kernels, launchers, then the CPU (interpreter) and CUDA kernels of the ops
``sem_fast_triton::sem_loss`` and ``sem_loss_backward``, whose schemas, fake kernels and
autograd `sem_fast.ops.schema` defines for every backend.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from sem_fast._checks import KERNEL_FLOAT_DTYPES, check_features, check_fields, check_labels, check_tensor
from sem_fast.ops.triton.utils import (
    INTERPRETER_TILE,
    cast_to,
    election_counter,
    interpreted,
    last_program,
    launch,
    num_warps_for,
    register_kernels,
)

#: Largest tile (rows x columns) a program holds at once on a GPU, and its elements per thread:
#: 4096 = 16 warps x 32 threads x 8. ptxas -v for sm_90 reports at most 128 registers and no
#: spills for the tiles this gives (8192 spilled), e.g. 64 registers at B = 512, K = 1000 on an
#: H100 (2 rows x 1024 columns, 8 warps). K above 4096 loops over blocks: registers and shared
#: memory do not grow with K. Not yet timed on a GPU.
_GPU_TILE = 4096
_PER_THREAD = 8

#: Row statistics ``(row max, log-sum-exp relative to it)`` of a batch whose ``perm`` is not a
#: permutation, in every row: logits never give a negative log-sum-exp relative to their max (the
#: max itself adds exp(0) = 1: it is >= 0, or NaN), so -inf marks the batch, and the NaN max makes
#: the recomputed softmax NaN.
POISONED_STATS = (float("nan"), float("-inf"))

#: Lanes per thread of the last program's reduction over the B rows (`_reduce_block`).
_REDUCE_PER_THREAD = 2


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
def _row_labels(labels_ptr, s_y, perm_ptr, lam_ptr, rows, row_mask, B, K):
    """Per row: own label ``y``, partner label ``y_partner``, ``lam``, the partner ``q`` (0 where
    ``perm`` is out of range) with ``q_ok``, and ``bad`` (a label outside ``[0, K)`` or an
    out-of-range partner: the row's CE and gradient are NaN)."""
    y = tl.load(labels_ptr + rows * s_y, mask=row_mask, other=0).to(tl.int64)
    q = tl.load(perm_ptr + rows, mask=row_mask, other=0)
    q_ok = (q >= 0) & (q < B)
    q = tl.where(q_ok, q, 0)
    y_partner = tl.load(labels_ptr + q * s_y, mask=row_mask & q_ok, other=-1).to(tl.int64)
    lam = tl.load(lam_ptr + rows, mask=row_mask, other=1.0)
    bad = (y < 0) | (y >= K) | (y_partner < 0) | (y_partner >= K)
    return y, y_partner, lam, q, q_ok, bad


@triton.jit
def _sem_error(zm_ptr, s_mb, s_md, zc_ptr, s_cb, s_cd, rows, q, q_ok, lam, d_cols, mask):
    """fp32 ``z_mix - (lam * z_clean + (1 - lam) * z_clean[q])`` of a ``(rows, d_cols)`` tile:
    0 outside ``mask``, NaN in rows whose partner is out of range."""
    zm = tl.load(zm_ptr + rows[:, None] * s_mb + d_cols[None, :] * s_md, mask=mask, other=0.0).to(tl.float32)
    zc = tl.load(zc_ptr + rows[:, None] * s_cb + d_cols[None, :] * s_cd, mask=mask, other=0.0).to(tl.float32)
    zp = tl.load(zc_ptr + q[:, None] * s_cb + d_cols[None, :] * s_cd, mask=mask & q_ok[:, None], other=0.0)
    zp = tl.where(q_ok[:, None], zp.to(tl.float32), float("nan"))
    t = lam[:, None] * zc + (1.0 - lam[:, None]) * zp
    return tl.where(mask, zm - t, 0.0)


@triton.jit
def _sem_loss_forward_kernel(
    logits_ptr, s_lb, s_lk,
    zm_ptr, s_mb, s_md,
    zc_ptr, s_cb, s_cd,
    labels_ptr, s_y,
    perm_ptr, lam_ptr,
    ce_rows_ptr, sem_rows_ptr, stats_ptr, inv_ptr, counter_ptr, loss_ptr, ce_ptr, sem_ptr,
    B, K, D, smoothing, sem_count, gamma,
    HAS_SEM: tl.constexpr, ONE_K_BLOCK: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr, REDUCE_BLOCK: tl.constexpr,
):
    """Mixed CE, SEM squared error and softmax statistics of ``BLOCK_B`` rows; the last program
    to finish sums every row into ``loss``, ``ce`` and ``sem`` (`_reduce_rows`).

    logits_ptr (B, K), zm_ptr (B, D) z_mix, zc_ptr (B, D) z_clean (if ``HAS_SEM``): fp32|bf16|
        fp16 with row/column strides ``s_*b``/``s_*k|d``. labels_ptr (B,) int64|int32, stride
        ``s_y``. perm_ptr (B,) int64, lam_ptr (B,) fp32: the MixDraw.
    ce_rows_ptr, sem_rows_ptr: (B,) fp32 scratch, the per-row CE and sum over D of the squared
        error (``sem_rows`` if ``HAS_SEM``). stats_ptr: (B, 2) fp32 output, the row max ``m`` and
        ``log sum exp(x - m)`` (`POISONED_STATS` in every row if ``perm`` is not a permutation).
        inv_ptr: (B,) int64 output, ``inv[perm[b]] = b`` (the inverse permutation when ``perm``
        is one). counter_ptr: (1,) int32, zero (`election_counter`); left zero.
        loss_ptr, ce_ptr, sem_ptr: () fp32 outputs, ``ce = sum(ce_rows) / B``,
        ``sem = sum(sem_rows) / sem_count`` (0 without ``HAS_SEM``), ``loss = ce + gamma * sem``.
    smoothing: label smoothing. ONE_K_BLOCK: ``K <= BLOCK_K`` (no loop over class blocks).
    REDUCE_BLOCK: lanes of the last program's loop over the rows.
    Every CE term is relative to ``m``: ``lse - x_y = (m - x_y) + log_d``, and the smoothing term
    uses ``m - mean(x)`` from the sum of ``x - r`` with ``r`` the first block's max. A term whose
    weight is 0 (``lam`` 1 or 0, no smoothing) is left out, so a masked ``-inf`` logit only counts
    where a target puts weight on it. Labels outside ``[0, K)`` or ``perm`` outside ``[0, B)`` are
    never read through; their rows come out NaN.
    Grid: ``cdiv(B, BLOCK_B)`` programs, any number of them resident at once (no program waits
    for another).
    """
    rows = (tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    row_mask = rows < B
    y, y_partner, lam, q, q_ok, bad = _row_labels(labels_ptr, s_y, perm_ptr, lam_ptr, rows, row_mask, B, K)
    y_safe = tl.where(bad, 0, y)
    yp_safe = tl.where(bad, 0, y_partner)
    x_y = tl.load(logits_ptr + rows * s_lb + y_safe * s_lk, mask=row_mask, other=0.0).to(tl.float32)
    x_yp = tl.load(logits_ptr + rows * s_lb + yp_safe * s_lk, mask=row_mask, other=0.0).to(tl.float32)

    # Online logsumexp (Milakov & Gimelshein 2018) relative to the running max, and the sum of
    # (x - r) for the smoothing term; the first block is peeled off to fix r.
    cols = tl.arange(0, BLOCK_K)
    x, col_mask = _logits_tile(logits_ptr, rows, row_mask, cols, K, s_lb, s_lk)
    m = tl.max(x, 1)
    d = tl.sum(tl.exp(x - m[:, None]), 1)
    r = tl.where(m == float("-inf"), 0.0, m)  # a first block of masked (-inf) logits
    rel_sum = tl.sum(tl.where(col_mask[None, :], x - r[:, None], 0.0), 1)
    if not ONE_K_BLOCK:
        for k0 in range(BLOCK_K, K, BLOCK_K):
            cols = k0 + tl.arange(0, BLOCK_K)
            x, col_mask = _logits_tile(logits_ptr, rows, row_mask, cols, K, s_lb, s_lk)
            m_new = tl.maximum(m, tl.max(x, 1))
            d = d * tl.exp(m - m_new) + tl.sum(tl.exp(x - m_new[:, None]), 1)
            rel_sum += tl.sum(tl.where(col_mask[None, :], x - r[:, None], 0.0), 1)
            m = m_new
    log_d = tl.log(d)
    # CE against (1 - eps) * (lam * onehot(y) + (1 - lam) * onehot(y')) + eps / K.
    hard = tl.where(lam != 0.0, lam * (m - x_y), 0.0) + tl.where(lam != 1.0, (1.0 - lam) * (m - x_yp), 0.0)
    smooth = tl.where(smoothing != 0.0, smoothing * ((m - r) - rel_sum / K), 0.0)
    ce = (1.0 - smoothing) * hard + smooth + log_d
    ce = tl.where(bad, float("nan"), ce)
    tl.store(ce_rows_ptr + rows, ce, mask=row_mask)
    tl.store(stats_ptr + 2 * rows, m, mask=row_mask)
    tl.store(stats_ptr + 2 * rows + 1, log_d, mask=row_mask)

    if HAS_SEM:
        acc = tl.zeros([BLOCK_B], tl.float32)
        for d0 in range(0, D, BLOCK_D):
            d_cols = d0 + tl.arange(0, BLOCK_D)
            mask = row_mask[:, None] & (d_cols < D)[None, :]
            diff = _sem_error(zm_ptr, s_mb, s_md, zc_ptr, s_cb, s_cd, rows, q, q_ok, lam, d_cols, mask)
            acc += tl.sum(diff * diff, 1)
        tl.store(sem_rows_ptr + rows, acc, mask=row_mask)
    # inv[perm[b]] = b, the address from a load of its own: Inductor's mutation analysis
    # (torch._higher_order_ops.triton_kernel_wrap) follows a stored address back through helper
    # calls to all their pointer arguments, and would take labels, perm and lam for outputs (and
    # copy them before every launch) were it `_row_labels`' q.
    target = tl.load(perm_ptr + rows, mask=row_mask, other=-1)
    tl.store(inv_ptr + target, rows, mask=(target >= 0) & (target < B))
    if last_program(counter_ptr):
        _reduce_rows(
            ce_rows_ptr, sem_rows_ptr, perm_ptr, inv_ptr, stats_ptr, loss_ptr, ce_ptr, sem_ptr,
            B, sem_count, gamma, HAS_SEM, REDUCE_BLOCK,
        )  # fmt: skip


@triton.jit
def _reduce_rows(
    ce_rows_ptr, sem_rows_ptr, perm_ptr, inv_ptr, stats_ptr, loss_ptr, ce_ptr, sem_ptr,
    B, sem_count, gamma, HAS_SEM: tl.constexpr, BLOCK: tl.constexpr,
):
    """The last program of `_sem_loss_forward_kernel` (every row written and visible): ``ce``,
    ``sem`` and ``loss`` summed in a fixed order (``BLOCK`` lanes over the rows, then a fixed
    tree), and the permutation check: ``perm`` is one iff every ``b`` finds
    ``inv[perm[b]] == b`` (a repeated entry leaves one of its rows unconfirmed; ``inv`` is read
    only where some row wrote it). Otherwise ``loss``, ``ce`` and (``HAS_SEM``) ``sem`` are NaN
    and every row's statistics become `POISONED_STATS`."""
    ce_acc = tl.zeros([BLOCK], tl.float32)
    sem_acc = tl.zeros([BLOCK], tl.float32)
    unconfirmed = tl.zeros([BLOCK], tl.int32)
    for start in range(0, B, BLOCK):
        idx = start + tl.arange(0, BLOCK)
        mask = idx < B
        ce_acc += tl.load(ce_rows_ptr + idx, mask=mask, other=0.0, cache_modifier=".cg")
        if HAS_SEM:
            sem_acc += tl.load(sem_rows_ptr + idx, mask=mask, other=0.0, cache_modifier=".cg")
        q = tl.load(perm_ptr + idx, mask=mask, other=0)
        q_ok = (q >= 0) & (q < B)
        owner = tl.load(inv_ptr + q, mask=mask & q_ok, other=-1, cache_modifier=".cg")
        unconfirmed += (mask & (owner != idx)).to(tl.int32)
    is_perm = tl.sum(unconfirmed, 0) == 0
    nan_unless_perm = tl.where(is_perm, 0.0, float("nan"))
    ce = tl.sum(ce_acc, 0) / B + nan_unless_perm
    sem = tl.sum(sem_acc, 0) / sem_count
    if HAS_SEM:
        sem += nan_unless_perm
    tl.store(ce_ptr, ce)
    tl.store(sem_ptr, sem)
    tl.store(loss_ptr, ce + gamma * sem)
    if not is_perm:
        for start in range(0, B, BLOCK):
            idx = start + tl.arange(0, BLOCK)
            mask = idx < B
            tl.store(stats_ptr + 2 * idx, tl.full([BLOCK], float("nan"), tl.float32), mask=mask)
            tl.store(stats_ptr + 2 * idx + 1, tl.full([BLOCK], float("-inf"), tl.float32), mask=mask)


@triton.jit
def _sem_loss_backward_kernel(
    g_loss_ptr, g_ce_ptr, g_sem_ptr,
    logits_ptr, s_lb, s_lk,
    zm_ptr, s_mb, s_md,
    zc_ptr, s_cb, s_cd,
    labels_ptr, s_y,
    perm_ptr, lam_ptr, stats_ptr, inv_ptr,
    dlogits_ptr, dz_mix_ptr, dz_clean_ptr,
    B, K, D, gamma, smoothing, inv_B, sem_scale,
    HAS_G_LOSS: tl.constexpr, HAS_G_CE: tl.constexpr, HAS_G_SEM: tl.constexpr,
    LOGITS: tl.constexpr, Z_MIX: tl.constexpr, Z_CLEAN: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """Gradients of ``BLOCK_B`` rows, recomputed from the inputs and the forward's row statistics.

    g_*_ptr: () gradients of loss, ce, sem (each used if ``HAS_G_*``); ce gets
        ``g_loss + g_ce``, sem gets ``gamma * g_loss + g_sem``.
    logits_ptr, zm_ptr, zc_ptr, labels_ptr, perm_ptr, lam_ptr: as in `_sem_loss_forward_kernel`.
    stats_ptr (B, 2) fp32, inv_ptr (B,) int64: the forward's row statistics and inverse
        permutation (``inv`` used if ``Z_CLEAN``). `POISONED_STATS` (``perm`` not a permutation)
        make every gradient NaN; ``inv`` is then never trusted (only bounds-masked).
    dlogits_ptr (B, K), dz_mix_ptr, dz_clean_ptr (B, D): contiguous outputs in the inputs'
        dtypes (each written if ``LOGITS`` / ``Z_MIX`` / ``Z_CLEAN``):
        ``dlogits = (softmax - y~) / B * g_ce``, ``dz_mix[k] = sem_scale * g_sem * u[k]`` and
        ``dz_clean[k] = -sem_scale * g_sem * (lam[k] * u[k] + (1 - lam[s]) * u[s])``, with
        ``u = z_mix - t`` the SEM error and ``s = inv[k]``.
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
    y, y_partner, lam, q, q_ok, bad = _row_labels(labels_ptr, s_y, perm_ptr, lam_ptr, rows, row_mask, B, K)
    m = tl.load(stats_ptr + 2 * rows, mask=row_mask, other=0.0)
    log_d = tl.load(stats_ptr + 2 * rows + 1, mask=row_mask, other=0.0)
    if LOGITS:
        scale = g_ce * inv_B
        for k0 in range(0, K, BLOCK_K):
            cols = k0 + tl.arange(0, BLOCK_K)
            x, col_mask = _logits_tile(logits_ptr, rows, row_mask, cols, K, s_lb, s_lk)
            p = tl.exp((x - m[:, None]) - log_d[:, None])
            own = tl.where(cols[None, :] == y[:, None], lam[:, None], 0.0)
            partner = tl.where(cols[None, :] == y_partner[:, None], 1.0 - lam[:, None], 0.0)
            g = (p - (1.0 - smoothing) * (own + partner) - smoothing / K) * scale
            g = tl.where(bad[:, None], float("nan"), g)
            k_mask = row_mask[:, None] & col_mask[None, :]
            tl.store(dlogits_ptr + rows[:, None] * K + cols[None, :], cast_to(g, dlogits_ptr.dtype.element_ty), mask=k_mask)
    if Z_MIX or Z_CLEAN:
        # Per row; NaN for POISONED_STATS.
        c = tl.where(log_d == float("-inf"), float("nan"), sem_scale * g_sem)[:, None]
        if Z_CLEAN:
            # Sample s = inv[k] has k as its partner; inv is exact unless the stats are poisoned,
            # and then only kept in bounds.
            s = tl.load(inv_ptr + rows, mask=row_mask, other=0)
            s = tl.where((s >= 0) & (s < B), s, 0)
            lam_s = tl.load(lam_ptr + s, mask=row_mask, other=1.0)
            q_s = tl.load(perm_ptr + s, mask=row_mask, other=0)
            q_s_ok = (q_s >= 0) & (q_s < B)
            q_s = tl.where(q_s_ok, q_s, 0)
        for d0 in range(0, D, BLOCK_D):
            d_cols = d0 + tl.arange(0, BLOCK_D)
            mask = row_mask[:, None] & (d_cols < D)[None, :]
            offs = rows[:, None] * D + d_cols[None, :]
            u = _sem_error(zm_ptr, s_mb, s_md, zc_ptr, s_cb, s_cd, rows, q, q_ok, lam, d_cols, mask)
            if Z_MIX:
                tl.store(dz_mix_ptr + offs, cast_to(u * c, dz_mix_ptr.dtype.element_ty), mask=mask)
            if Z_CLEAN:
                u_s = _sem_error(zm_ptr, s_mb, s_md, zc_ptr, s_cb, s_cd, s, q_s, q_s_ok, lam_s, d_cols, mask)
                g = -(lam[:, None] * u + (1.0 - lam_s[:, None]) * u_s) * c
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


def _sem_count(B: int, D: int, sem_mean: bool) -> float:
    """What the summed squared SEM error is divided by: every element, or every row."""
    return float(B * D if sem_mean else B)


def _reduce_block(B: int, num_warps: int, device: torch.device) -> int:
    """Lanes of the last program's loop over the ``B`` rows: every row at once where the
    program's threads (or the interpreter's tile) hold them, else `_REDUCE_PER_THREAD` per thread."""
    cap = INTERPRETER_TILE if interpreted(device) else 32 * num_warps * _REDUCE_PER_THREAD
    return min(triton.next_power_of_2(B), cap)


def _check_loss_op_args(logits, z_mix, z_clean, labels, perm, lam) -> int:
    """The metadata (no values: no sync) of a direct op call, so that no argument can make the
    kernels read out of bounds; returns B."""
    if check_tensor("labels", labels).dim() != 1:
        raise ValueError(f"labels must have shape (B,), got {tuple(labels.shape)}")
    B = labels.shape[0]
    check_labels(labels, B, labels.device, num_classes=None)
    check_features(logits, z_mix, z_clean, B, labels.device, KERNEL_FLOAT_DTYPES)
    check_fields("draw", {"perm": perm, "lam": lam}, B, labels.device)
    return B


def sem_loss_kernel(
    logits: torch.Tensor,
    z_mix: torch.Tensor,
    z_clean: torch.Tensor | None,
    labels: torch.Tensor,
    perm: torch.Tensor,
    lam: torch.Tensor,
    gamma: float,
    label_smoothing: float,
    sem_mean: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``sem_fast_triton::sem_loss`` (schema: `sem_fast.ops.schema`): ``(loss, ce, sem)``,
    ``row_stats (B, 2) fp32`` and ``inv_perm (B,) int64``, in one launch."""
    B = _check_loss_op_args(logits, z_mix, z_clean, labels, perm, lam)
    K, D = logits.shape[1], z_mix.shape[1]
    device = logits.device
    perm, lam = perm.contiguous(), lam.contiguous()
    has_sem = z_clean is not None
    f32 = dict(dtype=torch.float32, device=device)
    ce_rows = torch.empty(B, **f32)
    sem_rows = torch.empty(B, **f32) if has_sem else ce_rows
    row_stats = torch.empty(B, 2, **f32)
    inv_perm = torch.empty(B, dtype=torch.int64, device=device)
    loss, ce, sem = (torch.empty((), **f32) for _ in range(3))
    zc = z_clean if has_sem else z_mix
    block_b, block_k, block_d, warps = _geometry(B, K, D, device)
    launch(_sem_loss_forward_kernel)[(triton.cdiv(B, block_b),)](
        logits, *logits.stride(), z_mix, *z_mix.stride(), zc, *zc.stride(), labels, labels.stride(0),
        perm, lam, ce_rows, sem_rows, row_stats, inv_perm, election_counter(device), loss, ce, sem,
        B, K, D, label_smoothing, _sem_count(B, D, sem_mean), gamma,
        HAS_SEM=has_sem, ONE_K_BLOCK=K <= block_k, BLOCK_B=block_b, BLOCK_K=block_k, BLOCK_D=block_d,
        REDUCE_BLOCK=_reduce_block(B, warps, device), num_warps=warps,
    )  # fmt: skip
    return loss, ce, sem, row_stats, inv_perm


def sem_loss_backward_kernel(
    grad_loss: torch.Tensor | None,
    grad_ce: torch.Tensor | None,
    grad_sem: torch.Tensor | None,
    logits: torch.Tensor,
    z_mix: torch.Tensor,
    z_clean: torch.Tensor | None,
    labels: torch.Tensor,
    perm: torch.Tensor,
    lam: torch.Tensor,
    row_stats: torch.Tensor,
    inv_perm: torch.Tensor,
    gamma: float,
    label_smoothing: float,
    sem_mean: bool,
    logits_grad: bool,
    z_mix_grad: bool,
    z_clean_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``sem_fast_triton::sem_loss_backward`` (schema: `sem_fast.ops.schema`): ``(dlogits,
    dz_mix, dz_clean)``, each an empty tensor unless its ``*_grad`` flag is set, in one launch."""
    B = _check_loss_op_args(logits, z_mix, z_clean, labels, perm, lam)
    K, D = logits.shape[1], z_mix.shape[1]
    if row_stats.shape != (B, 2) or row_stats.dtype != torch.float32:
        raise ValueError(f"row_stats must be ({B}, 2) float32, got {tuple(row_stats.shape)} {row_stats.dtype}")
    if inv_perm.shape != (B,) or inv_perm.dtype != torch.int64:
        raise ValueError(f"inv_perm must be ({B},) int64, got {tuple(inv_perm.shape)} {inv_perm.dtype}")
    if (z_mix_grad or z_clean_grad) and z_clean is None:
        raise ValueError("z_mix_grad and z_clean_grad need z_clean (there is no SEM term without it)")
    device = logits.device
    perm, lam, row_stats, inv_perm = perm.contiguous(), lam.contiguous(), row_stats.contiguous(), inv_perm.contiguous()

    def grad_of(t: torch.Tensor, needed: bool) -> torch.Tensor:
        return torch.empty(t.shape, dtype=t.dtype, device=device) if needed else t.new_empty(0)

    zc = z_clean if z_clean is not None else z_mix
    dlogits, dz_mix, dz_clean = grad_of(logits, logits_grad), grad_of(z_mix, z_mix_grad), grad_of(zc, z_clean_grad)
    block_b, block_k, block_d, warps = _geometry(B, K, D, device)
    launch(_sem_loss_backward_kernel)[(triton.cdiv(B, block_b),)](
        grad_loss, grad_ce, grad_sem,
        logits, *logits.stride(), z_mix, *z_mix.stride(), zc, *zc.stride(), labels, labels.stride(0),
        perm, lam, row_stats, inv_perm, dlogits, dz_mix, dz_clean,
        B, K, D, gamma, label_smoothing, 1.0 / B, 2.0 / _sem_count(B, D, sem_mean),
        HAS_G_LOSS=grad_loss is not None, HAS_G_CE=grad_ce is not None, HAS_G_SEM=grad_sem is not None,
        LOGITS=logits_grad, Z_MIX=z_mix_grad, Z_CLEAN=z_clean_grad,
        BLOCK_B=block_b, BLOCK_K=block_k, BLOCK_D=block_d, num_warps=warps,
    )  # fmt: skip
    return dlogits, dz_mix, dz_clean


register_kernels({"sem_loss": sem_loss_kernel, "sem_loss_backward": sem_loss_backward_kernel})
