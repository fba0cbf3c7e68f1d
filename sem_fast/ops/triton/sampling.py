"""The draws of one training step (`MixDraw` and `AugmentDraw`) in one Triton launch.

`sem_fast.sampling` draws a 63-bit key with the caller's ``torch.Generator`` into a device tensor
and calls `sample_step_draws`; the kernel reads the key and derives every random number from
Triton's counter-based Philox generator, with counter ``(sample, stream, iteration, 0)``: each
random quantity has its own stream, so the draw is a pure function of ``(key, B, H, W, cfg)``.
The key never leaves the device, so the launch replays inside a CUDA graph (each replay reads
the key that the graph's ``random_`` drew from the generator), and the generator's state alone
reproduces and resumes the sequence of draws.

Distributions, as the torch path of `sem_fast.sampling`:

- lambda ~ Beta(alpha, alpha) as ``sigmoid(log X - log Y)``, ``X, Y ~ Gamma(alpha)`` drawn by
  Marsaglia-Tsang on ``alpha + 1`` boosted by ``U**(1/alpha)``, in log space (exact 0/1 limits
  for small alpha, never NaN), with a true rejection loop per lane (no cap on candidates);
- CutMix boxes of side ``int(H * sqrt(1 - lam))`` around a centre uniform over the image,
  clipped, lambda area-corrected; integers uniform in ``[0, n)`` by Lemire's multiply-shift with
  rejection, so exactly uniform;
- coins ``U < p`` with ``U`` on the ``2**-24`` grid (as ``torch.rand`` for float32);
- the permutation: `KEY_BITS` random bits per sample packed above its index, sorted in one
  program; a tie between two keys (probability below ``B**2 / 2**48``) redraws all keys, so the
  permutation is exactly uniform. Batches above `PERM_MAX` use ``torch.randperm`` instead.

Layout: the jit helpers, the kernel, then the launcher.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from sem_fast.config import SEMConfig
from sem_fast.draws import AugmentDraw, MixDraw
from sem_fast.ops.triton.utils import INTERPRETER_TILE, interpreted

#: Largest batch whose permutation is sorted in the kernel (one program holds the whole batch):
#: ptxas -v for sm_90a at 8 warps, 4096 int64 keys: 196 registers, no spills; 8192 keys spill
#: (255 registers at 8 warps, 124 bytes at 16). Larger batches use ``torch.randperm``.
PERM_MAX = 4096
#: Random bits per permutation key: 64 bits hold the key, the 16-bit sample index (PERM_MAX <
#: 2**16) and a clear sign bit. Two of B keys tie with probability below B**2 / 2**48.
KEY_BITS = 47
#: Lanes per pass over the batch for lambda, boxes and augmentation on a GPU: 256 = 8 warps x 32
#: threads, one sample per thread (the work per lane is a few Philox calls; the kernel is
#: latency-bound). The interpreter takes `INTERPRETER_TILE` lanes per pass: one numpy op each.
_LANES = 256
#: 8 warps: at ``PERM_MAX`` keys the sort needs 196 registers per thread without spills (ptxas -v,
#: sm_90a); 64 registers for batches up to 1024.
_NUM_WARPS = 8

#: Philox streams (counter word c1), one per random quantity.
_S_PERM: tl.constexpr = tl.constexpr(0)
_S_MIXUP: tl.constexpr = tl.constexpr(1)  # 1: X, 2: Y of Beta(alpha); +_BOOST: their boosts
_S_CUTMIX: tl.constexpr = tl.constexpr(3)  # 3: X, 4: Y of Beta(cutmix_alpha)
_BOOST: tl.constexpr = tl.constexpr(16)
_S_SWITCH: tl.constexpr = tl.constexpr(5)
_S_MIXED: tl.constexpr = tl.constexpr(6)
_S_BOX_Y: tl.constexpr = tl.constexpr(7)
_S_BOX_X: tl.constexpr = tl.constexpr(8)
_S_CROP_Y: tl.constexpr = tl.constexpr(9)
_S_CROP_X: tl.constexpr = tl.constexpr(10)
_S_FLIP: tl.constexpr = tl.constexpr(11)

#: Pairing modes of the kernel.
_IDENTITY, _SORTED, _REVERSED, _EXTERNAL = 0, 1, 2, 3
#: ``cfg.mix`` -> the kernel's MIX code (0: nothing mixes).
_MIX_CODES = {"none": 0, "mixup": 1, "cutmix": 2, "switch": 3}


# ----------------------------------------------------------------------------- jit helpers


@triton.jit
def _philox(seed, lane, stream: tl.constexpr, iteration):
    """Four independent uint32 blocks for counter ``(lane, stream, iteration, 0)`` and key ``seed``."""
    c0 = lane.to(tl.uint32)
    zero = c0 * 0
    return tl.philox(seed, c0, zero + stream, zero + iteration, zero)


@triton.jit
def _uniform(bits):
    """uint32 -> float32 uniform on ``{0, 2**-24, ..., 1 - 2**-24}`` (24 bits, as torch.rand)."""
    return (bits >> 8).to(tl.float32) * (1.0 / 16777216.0)


@triton.jit
def _uniform_positive(bits):
    """uint32 -> float32 uniform on ``{2**-24, ..., 1}`` (never 0, so its log is finite)."""
    return ((bits >> 8) + 1).to(tl.float32) * (1.0 / 16777216.0)


@triton.jit
def _log_gamma(seed, lane, valid, stream: tl.constexpr, shape):
    """``log`` of one Gamma(shape, 1) sample per lane, fp32; ``shape`` a positive fp32 scalar.

    Marsaglia & Tsang (2000) on ``shape + 1`` (acceptance above 0.95), boosted by
    ``Gamma(a) = Gamma(a + 1) * U**(1/a)``; the loop runs until every valid lane accepted.
    """
    d = shape + (1.0 - 1.0 / 3.0)
    c = 1.0 / tl.sqrt_rn(9.0 * d)
    log_d = tl.log(d)
    log_g = tl.zeros(lane.shape, tl.float32)
    pending = valid
    iteration = 0
    while tl.max(pending.to(tl.int32), 0) > 0:
        r0, r1, r2, _ = _philox(seed, lane, stream, iteration)
        x = tl.sqrt(-2.0 * tl.log(_uniform_positive(r0))) * tl.cos(6.283185307179586 * _uniform(r1))
        v = 1.0 + c * x
        v3 = v * v * v
        log_v3 = tl.log(tl.maximum(v3, 1.1754943508222875e-38))
        ok = (v > 0.0) & (tl.log(_uniform_positive(r2)) < 0.5 * x * x + d - d * v3 + d * log_v3)
        log_g = tl.where(pending & ok, log_d + log_v3, log_g)
        pending = pending & ~ok
        iteration += 1
    boost, _, _, _ = _philox(seed, lane, stream + _BOOST, 0)
    return log_g + tl.log(_uniform_positive(boost)) / shape


@triton.jit
def _beta(seed, lane, valid, stream: tl.constexpr, alpha):
    """One Beta(alpha, alpha) sample per lane: ``sigmoid(log X - log Y)`` (streams ``stream``,
    ``stream + 1``), through ``exp(-|t|)``, which cannot overflow and underflows to exact 0/1."""
    t = _log_gamma(seed, lane, valid, stream, alpha) - _log_gamma(seed, lane, valid, stream + 1, alpha)
    e = tl.exp(-tl.abs(t))
    return tl.where(t >= 0, 1.0, e) / (1.0 + e)


@triton.jit
def _below(seed, lane, valid, stream: tl.constexpr, n):
    """int32 uniform in ``[0, n)`` per lane, ``1 <= n < 2**31``: Lemire's multiply-shift, rejecting
    the ``2**32 mod n`` low products that would bias it, so exactly uniform."""
    n = tl.to_tensor(n).to(tl.int64)
    threshold = (4294967296 - n) % n
    out = tl.zeros(lane.shape, tl.int32)
    pending = valid
    iteration = 0
    while tl.max(pending.to(tl.int32), 0) > 0:
        r, _, _, _ = _philox(seed, lane, stream, iteration)
        m = r.to(tl.int64) * n
        ok = (m & 4294967295) >= threshold
        out = tl.where(pending & ok, (m >> 32).to(tl.int32), out)
        pending = pending & ~ok
        iteration += 1
    return out


@triton.jit
def _coin(seed, lane, stream: tl.constexpr, p):
    """True with probability ``p`` (fp32 scalar) per lane."""
    r, _, _, _ = _philox(seed, lane, stream, 0)
    return _uniform(r) < p


@triton.jit
def _permutation(seed, perm_ptr, B, PERM_BLOCK: tl.constexpr, KEY_BITS: tl.constexpr):
    """``perm[0:B]``: a uniformly random permutation, by sorting ``KEY_BITS``-bit random keys
    (at most 47) packed above the 16-bit index; any tie redraws every key.

    ``perm_ptr`` doubles as the scratch where each sorted round is compared with its neighbour;
    the barriers order those reads and writes between the program's threads.
    """
    i = tl.arange(0, PERM_BLOCK)
    valid = i < B
    has_next = i < B - 1
    packed_sorted = tl.zeros([PERM_BLOCK], tl.int64)
    tie = 1
    attempt = 0
    while tie > 0:
        r0, r1, _, _ = _philox(seed, i, _S_PERM, attempt)
        if KEY_BITS <= 32:
            key = (r0 >> (32 - KEY_BITS)).to(tl.int64)
        else:
            key = (r0.to(tl.int64) << (KEY_BITS - 32)) | (r1 >> (64 - KEY_BITS)).to(tl.int64)
        packed_sorted = tl.sort(tl.where(valid, (key << 16) | i.to(tl.int64), 9223372036854775807))
        tl.store(perm_ptr + i, packed_sorted, mask=valid)
        tl.debug_barrier()
        following = tl.load(perm_ptr + i + 1, mask=has_next, other=-1)
        tie = tl.max((has_next & ((packed_sorted >> 16) == (following >> 16))).to(tl.int32), 0)
        tl.debug_barrier()
        attempt += 1
    tl.store(perm_ptr + i, packed_sorted & 65535, mask=valid)


# ----------------------------------------------------------------------------- kernel


@triton.jit
def _sample_step_kernel(
    seed_ptr, perm_ptr, lam_ptr, box_ptr, cutmix_ptr, offset_ptr, flip_ptr,
    B, H, W, alpha, cutmix_alpha, switch_prob, mix_prob, crop_span,
    DRAW: tl.constexpr, MIX: tl.constexpr, PAIRING: tl.constexpr, ELEM: tl.constexpr,
    CORRECT_LAM: tl.constexpr, AUGMENT: tl.constexpr, CROP: tl.constexpr, HFLIP: tl.constexpr,
    RANDOM: tl.constexpr, LANES: tl.constexpr, PERM_BLOCK: tl.constexpr, KEY_BITS: tl.constexpr,
):  # fmt: skip
    """One program writes the whole draw of a batch of ``B`` images of ``H x W``.

    seed_ptr: (1,) int64 Philox key (read only when ``RANDOM``).
    MixDraw (when ``DRAW``): perm_ptr (B,) int64, lam_ptr (B,) fp32, box_ptr (B, 4) int32,
    cutmix_ptr (B,) bool. AugmentDraw (when ``AUGMENT``): offset_ptr (B, 2) int32, flip_ptr (B,) bool.
    alpha, cutmix_alpha, switch_prob, mix_prob: fp32 scalars of the config; crop_span: ``2p + 1``.
    MIX: 0 none, 1 mixup, 2 cutmix, 3 switch. PAIRING: 0 identity, 1 sorted random keys,
    2 reversed batch, 3 written by the caller. ELEM: one lambda/box/coin per sample (else one per
    batch: every lane reads sample 0's streams). CROP / HFLIP: random offsets / flips (else zero
    offsets / no flips). RANDOM: whether anything is random (else ``seed_ptr`` is not read).
    LANES: samples per pass; PERM_BLOCK: power of two >= B for the sort; KEY_BITS: see `KEY_BITS`.
    """
    seed = 0
    if RANDOM:
        seed = tl.load(seed_ptr)
    if DRAW and PAIRING == 1:
        _permutation(seed, perm_ptr, B, PERM_BLOCK, KEY_BITS)
    for start in range(0, B, LANES):
        b = start + tl.arange(0, LANES)
        valid = b < B
        if DRAW:
            if PAIRING == 0:
                tl.store(perm_ptr + b, b.to(tl.int64), mask=valid)
            elif PAIRING == 2:
                tl.store(perm_ptr + b, (B - 1 - b).to(tl.int64), mask=valid)
            lam = tl.full([LANES], 1.0, tl.float32)
            y0 = tl.zeros([LANES], tl.int32)
            y1 = y0
            x0 = y0
            x1 = y0
            is_cutmix = b < 0
            if MIX != 0:
                s = b if ELEM else b * 0  # the sample whose random streams this lane reads
                lam_mixup = lam
                if MIX != 2:
                    lam_mixup = _beta(seed, s, valid, _S_MIXUP, alpha)
                if MIX == 1:
                    is_cutmix = b < 0
                elif MIX == 2:
                    is_cutmix = b >= 0
                else:
                    is_cutmix = _coin(seed, s, _S_SWITCH, switch_prob)
                mixed = _coin(seed, s, _S_MIXED, mix_prob)
                is_cutmix = is_cutmix & mixed
                lam = tl.where(mixed, lam_mixup, 1.0)
                if MIX != 1:
                    lam_cutmix = _beta(seed, s, valid, _S_CUTMIX, cutmix_alpha)
                    ratio = tl.sqrt_rn(1.0 - lam_cutmix)
                    half_h = (H * ratio).to(tl.int32) // 2  # int(H * ratio) // 2, truncation
                    half_w = (W * ratio).to(tl.int32) // 2
                    cy = _below(seed, s, valid, _S_BOX_Y, H)
                    cx = _below(seed, s, valid, _S_BOX_X, W)
                    y0 = tl.where(is_cutmix, tl.minimum(tl.maximum(cy - half_h, 0), H), 0)
                    y1 = tl.where(is_cutmix, tl.minimum(tl.maximum(cy + half_h, 0), H), 0)
                    x0 = tl.where(is_cutmix, tl.minimum(tl.maximum(cx - half_w, 0), W), 0)
                    x1 = tl.where(is_cutmix, tl.minimum(tl.maximum(cx + half_w, 0), W), 0)
                    if CORRECT_LAM:
                        area = ((y1 - y0) * (x1 - x0)).to(tl.float32)
                        lam_cutmix = 1.0 - tl.math.div_rn(area, (H * W).to(tl.float32))
                    lam = tl.where(is_cutmix, lam_cutmix, lam)
            tl.store(lam_ptr + b, lam, mask=valid)
            tl.store(box_ptr + 4 * b, y0, mask=valid)
            tl.store(box_ptr + 4 * b + 1, y1, mask=valid)
            tl.store(box_ptr + 4 * b + 2, x0, mask=valid)
            tl.store(box_ptr + 4 * b + 3, x1, mask=valid)
            tl.store(cutmix_ptr + b, is_cutmix, mask=valid)
        if AUGMENT:
            dy = tl.zeros([LANES], tl.int32)
            dx = dy
            if CROP:
                dy = _below(seed, b, valid, _S_CROP_Y, crop_span)
                dx = _below(seed, b, valid, _S_CROP_X, crop_span)
            flip = b < 0
            if HFLIP:
                flip = _coin(seed, b, _S_FLIP, 0.5)
            tl.store(offset_ptr + 2 * b, dy, mask=valid)
            tl.store(offset_ptr + 2 * b + 1, dx, mask=valid)
            tl.store(flip_ptr + b, flip, mask=valid)


# ----------------------------------------------------------------------------- launcher


def sample_step_draws(
    batch_size: int,
    height: int,
    width: int,
    cfg: SEMConfig,
    *,
    device: torch.device,
    generator: torch.Generator | None,
    draw: bool,
    augment: bool,
) -> tuple[MixDraw | None, AugmentDraw | None]:
    """The `MixDraw` (when ``draw``) and `AugmentDraw` (when ``augment``) of a batch, on ``device``.

    Launches: one ``random_`` for the key (skipped when nothing is random) and the kernel; plus
    ``torch.randperm`` when ``batch_size > PERM_MAX`` and ``cfg.pairing == 'perm'``. Arguments
    are checked by `sem_fast.sampling`.
    """
    B = batch_size
    mix = _MIX_CODES[cfg.mix] if draw and cfg.mixes else 0
    if not mix:
        pairing = _IDENTITY
    elif cfg.pairing == "flip":
        pairing = _REVERSED
    else:
        pairing = _SORTED if B <= PERM_MAX else _EXTERNAL
    crop, hflip = augment and cfg.crop_padding > 0, augment and cfg.hflip
    random = bool(mix) or crop or hflip
    seed = torch.empty(1, dtype=torch.int64, device=device)
    if random:
        seed.random_(generator=generator)
    perm = torch.randperm(B, device=device, generator=generator) if pairing == _EXTERNAL else None
    mix_draw = aug_draw = None
    if draw:
        mix_draw = MixDraw(
            perm=perm if perm is not None else torch.empty(B, dtype=torch.int64, device=device),
            lam=torch.empty(B, dtype=torch.float32, device=device),
            box=torch.empty(B, 4, dtype=torch.int32, device=device),
            is_cutmix=torch.empty(B, dtype=torch.bool, device=device),
        )
    if augment:
        aug_draw = AugmentDraw(
            offset=torch.empty(B, 2, dtype=torch.int32, device=device),
            flip=torch.empty(B, dtype=torch.bool, device=device),
        )
    # The outputs not asked for are never written (their constexpr branch is off): any pointer.
    out_mix = mix_draw if mix_draw is not None else (aug_draw.offset,) * 4
    out_aug = aug_draw if aug_draw is not None else (mix_draw.lam,) * 2
    lanes = min(INTERPRETER_TILE if interpreted(device) else _LANES, _pow2(B))
    _sample_step_kernel[(1,)](
        seed, out_mix[0], out_mix[1], out_mix[2], out_mix[3], out_aug[0], out_aug[1],
        B, height, width, cfg.alpha, cfg.cutmix_alpha, cfg.switch_prob, cfg.mix_prob, 2 * cfg.crop_padding + 1,
        DRAW=draw, MIX=mix, PAIRING=pairing, ELEM=cfg.lam_mode == "elem", CORRECT_LAM=cfg.correct_lam,
        AUGMENT=augment, CROP=crop, HFLIP=hflip, RANDOM=random, LANES=lanes,
        PERM_BLOCK=_pow2(B) if pairing == _SORTED else 1, KEY_BITS=KEY_BITS, num_warps=_NUM_WARPS,
    )  # fmt: skip
    return mix_draw, aug_draw


def _pow2(n: int) -> int:
    """The smallest power of two >= max(n, 16) (Triton blocks are powers of two)."""
    return max(16, triton.next_power_of_2(n))
