"""The reference path: plain PyTorch, written to read like the paper's equations.

This module is the specification every fast backend is checked against, and the
``backend='reference'`` entry points: like every backend's, `mix_images` and `sem_loss` check
nothing (`sem_fast.mix_images` / `sem_fast.sem_loss` / `fused_sem_step` check the arguments,
then call a backend). It computes in float32 whatever the input dtype (float64 in float64, for
``gradcheck`` and float64 truth in tests), favours clarity over speed (dense one-hot targets,
materialized interpolation targets) and runs on any device.

Bad values, which `sem_fast._checks` rejects in eager mode unless ``check_values=False``, stay
memory-safe here, eager and compiled, as in every kernel: no index leaves its tensor, nothing is
read on the host, and the result is NaN rather than silently wrong:

- a label outside ``[0, K)``: a NaN target row for its sample and for every sample it is the
  partner of, so a NaN cross-entropy;
- a partner outside ``[0, B)`` (negative ones do not wrap): read as NaN (`partners`, a masked
  gather), so ``x_mix`` is NaN where it reads the partner and the loss is NaN;
- a crop offset outside ``[0, 2 * crop_padding]``: a NaN sample, with a NaN gradient;
- a ``perm`` that is not a permutation (a repeated partner): a NaN loss with NaN gradients
  (`is_permutation`; the fast kernels' backward inverts ``perm``);
- a box reaching past the image is clipped to it, an inverted box is empty, a box of a mixup
  sample is ignored, and ``lam`` outside ``[0, 1]`` is used as given (extrapolation).

Notation (Han et al. 2023, Eq. 2, 3 and 9): ``g`` is the encoder (pooled penultimate features),
``h`` the linear head, ``(x_i, y_i)`` a sample and ``(x_j, y_j)`` its partner ``j = perm[i]``.

    mixup:   x~ = lam * x_i + (1 - lam) * x_j
    CutMix:  x~ = x_i with the box of x_j pasted in, lam = 1 - box area / (H * W)
    y~     = lam * y_i + (1 - lam) * y_j                       (one-hot, then label smoothing)
    loss   = CE(h(g(x~)), y~) + gamma * D(g(x~), lam * g(x_i) + (1 - lam) * g(x_j))
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from sem_fast.config import SEMConfig
from sem_fast.draws import AugmentDraw, MixDraw


def upcast(t: torch.Tensor) -> torch.Tensor:
    """``t`` in float32, or float64 if it is float64 (so that gradcheck can run in float64)."""
    return t if t.dtype == torch.float64 else t.float()


def nan_unless(ok: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``t`` where the bool ``ok`` (broadcast against ``t``) holds, NaN elsewhere; the gradient
    flowing back through a NaN element is NaN too (a multiplication, not a ``where``)."""
    return t * torch.where(ok, 1.0, torch.nan)


def partners(t: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """``t[perm]``: row ``perm[b]`` of ``t (B, ...)`` for each sample ``b``, as a masked gather:
    a partner outside ``[0, B)`` reads no memory and gives a NaN row (which passes no gradient
    back to ``t``)."""
    B = t.shape[0]
    inside = (perm >= 0) & (perm < B)
    rows = t[perm.clamp(0, B - 1)]
    return torch.where(inside.view(-1, *(1,) * (t.dim() - 1)), rows, torch.nan)


def is_permutation(perm: torch.Tensor) -> torch.Tensor:
    """``() bool``: whether ``perm (B,)`` holds each of ``0..B-1`` exactly once (a device op)."""
    return (torch.sort(perm).values == torch.arange(perm.shape[0], device=perm.device)).all()


def as_float_nchw(images: torch.Tensor) -> torch.Tensor:
    """The batch as ``(B, C, H, W) float32`` in its own units (0..255 for uint8 NHWC input)."""
    return images.permute(0, 3, 1, 2).float() if images.dtype == torch.uint8 else upcast(images)


def normalize_units(x: torch.Tensor, from_uint8: bool, cfg: SEMConfig) -> torch.Tensor:
    """``(x / 255 - mean) / std`` for pixel values ``x (B, C, H, W) float32`` in 0..255; float
    input (``from_uint8=False``) is already normalized and returned as is."""
    if not from_uint8:
        return x
    mean, std = _channel_stats(cfg.mean, cfg.std, x.device)
    return (x / 255.0 - mean) / std


@functools.lru_cache(maxsize=16)
def _channel_stats(
    mean: tuple[float, ...], std: tuple[float, ...], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(1, C, 1, 1) float32`` mean and std on ``device``, made once per configuration: a tensor
    built from Python numbers is a host-to-device copy (a sync on CUDA, and not capturable in a
    CUDA graph), so no training step makes one."""
    C = len(mean)
    return (
        torch.tensor(mean, dtype=torch.float32, device=device).view(1, C, 1, 1),
        torch.tensor(std, dtype=torch.float32, device=device).view(1, C, 1, 1),
    )


def normalize(images: torch.Tensor, cfg: SEMConfig) -> torch.Tensor:
    """``(B, H, W, C) uint8`` -> ``(x / 255 - mean) / std`` as ``(B, C, H, W) float32``.

    Float ``(B, C, H, W)`` input is taken as already normalized and only upcast to float32.
    """
    return normalize_units(as_float_nchw(images), images.dtype == torch.uint8, cfg)


def augment_images(x: torch.Tensor, augment: AugmentDraw, cfg: SEMConfig) -> torch.Tensor:
    """Per-sample random crop with padding and horizontal flip of ``x (B, C, H, W) float32``.

    ``out[b, :, i, j] = pad(x)[b, :, i + dy, jj + dx]`` with ``(dy, dx) = augment.offset[b]``,
    ``jj = W - 1 - j`` if ``augment.flip[b]`` else ``j``, and ``pad`` adding
    ``cfg.crop_padding`` pixels on every side (zeros, or mirrored for ``'reflect'``). A sample
    whose offset leaves ``[0, 2 * cfg.crop_padding]`` is NaN, and so is its gradient.
    """
    B, _, H, W = x.shape
    p = cfg.crop_padding
    if p > 0:
        x = F.pad(x, (p, p, p, p), mode="reflect" if cfg.padding_mode == "reflect" else "constant")
    offset_ok = ((augment.offset >= 0) & (augment.offset <= 2 * p)).all(1)
    x = nan_unless(offset_ok.view(B, 1, 1, 1), x)  # padding included
    dy, dx = augment.offset.long().clamp(0, 2 * p).unbind(1)
    cols = torch.arange(W, device=x.device).expand(B, W)
    cols = torch.where(augment.flip.view(B, 1), W - 1 - cols, cols)
    rows = torch.arange(H, device=x.device).view(1, H) + dy.view(B, 1)
    cols = cols + dx.view(B, 1)
    batch = torch.arange(B, device=x.device).view(B, 1, 1)
    return x[batch, :, rows.view(B, H, 1), cols.view(B, 1, W)].permute(0, 3, 1, 2)


def box_mask(box: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(B, 1, H, W) bool``: True inside each sample's half-open box ``(y0, y1, x0, x1)``."""
    rows = torch.arange(height, device=box.device).view(1, height, 1)
    cols = torch.arange(width, device=box.device).view(1, 1, width)
    y0, y1, x0, x1 = (box[:, k].view(-1, 1, 1) for k in range(4))
    inside = (rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)
    return inside.unsqueeze(1)


def mix_images(
    images: torch.Tensor, draw: MixDraw, cfg: SEMConfig, augment: AugmentDraw | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalize a batch, optionally augment it, and mix every sample with its partner.

    Args:
        images: ``(B, H, W, C) uint8`` or ``(B, C, H, W)`` float32|bf16|fp16|float64 (already
            normalized).
        draw: the `MixDraw` of this batch.
        cfg: its ``mean``/``std``, ``crop_padding``/``padding_mode``, ``out_dtype`` and
            ``channels_last`` are used.
        augment: crop offsets and flips (`sample_augment`) applied to the clean images before
            mixing, so a partner is the augmented partner; ``None``: no augmentation.

    Returns:
        ``(x_clean, x_mix)``, both ``(B, C, H, W)`` in ``cfg.resolve_out_dtype(images)``
        (``channels_last`` memory format if ``cfg.channels_last``). Per sample ``b`` with partner
        ``j = draw.perm[b]``: mixup ``x_mix[b] = lam[b] * x[b] + (1 - lam[b]) * x[j]``; CutMix
        ``x_mix[b] = x[b]`` with ``draw.box[b]`` taken from ``x[j]``. When ``cfg.mixes`` is False,
        ``x_mix`` is ``x_clean``. Differentiable with respect to float ``images``. A partner
        outside the batch makes ``x_mix[b]`` NaN where it is read (everywhere for mixup, inside
        the box for CutMix); other bad values: see the module docstring.
    """
    x = as_float_nchw(images)
    if augment is not None:
        x = augment_images(x, augment, cfg)
    x = normalize_units(x, images.dtype == torch.uint8, cfg)
    B, _, H, W = x.shape
    x_partner = partners(x, draw.perm)
    lam = draw.lam.view(B, 1, 1, 1)
    lerp = lam * x + (1.0 - lam) * x_partner
    paste = torch.where(box_mask(draw.box, H, W), x_partner, x)
    x_mix = torch.where(draw.is_cutmix.view(B, 1, 1, 1), paste, lerp)

    dtype = cfg.resolve_out_dtype(images)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    # copy=True: never the caller's own tensor (float32 input), always in ``fmt``.
    x_clean = x.to(dtype=dtype, memory_format=fmt, copy=True)
    if not cfg.mixes:
        return x_clean, x_clean
    return x_clean, x_mix.to(dtype=dtype, memory_format=fmt, copy=True)


def mixed_targets(
    labels: torch.Tensor, draw: MixDraw, num_classes: int, label_smoothing: float, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """``y~ = lam * onehot(y_i) + (1 - lam) * onehot(y_perm[i])``, then smoothed: ``(B, K) dtype``.

    A label outside ``[0, K)`` gives a NaN one-hot row, for its sample and every sample it is the
    partner of; so does a partner outside the batch.
    """
    classes = torch.arange(num_classes, device=labels.device)
    label_ok = (labels >= 0) & (labels < num_classes)
    own = torch.where(label_ok.view(-1, 1), labels.view(-1, 1) == classes, torch.nan).to(dtype)
    partner = partners(own, draw.perm)
    lam = draw.lam.to(dtype).view(-1, 1)
    y_mix = lam * own + (1.0 - lam) * partner
    return (1.0 - label_smoothing) * y_mix + label_smoothing / num_classes


def mixed_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, draw: MixDraw, cfg: SEMConfig) -> torch.Tensor:
    """``mean_b CE(logits[b], y~[b])`` = ``lam * CE(., y_i) + (1 - lam) * CE(., y_j)``: ``() float32``
    (float64 for float64 logits).

    ``logits (B, K)`` fp32|bf16|fp16|fp64, ``labels (B,)`` int64|int32 in ``[0, K)``. A class
    with no target weight adds nothing, even with a ``-inf`` logit (``0 * log 0 = 0``), as in
    ``F.cross_entropy``.
    """
    log_p = F.log_softmax(upcast(logits), dim=1)
    targets = mixed_targets(labels, draw, logits.shape[1], cfg.label_smoothing, log_p.dtype)
    return -torch.where(targets == 0, 0.0, targets * log_p).sum(1).mean()


def sem_target(z_clean: torch.Tensor, draw: MixDraw, detach: bool) -> torch.Tensor:
    """``t[b] = lam[b] * z_clean[b] + (1 - lam[b]) * z_clean[perm[b]]``: ``(B, D) float32``
    (NaN rows for partners outside the batch)."""
    z = upcast(z_clean)
    lam = draw.lam.view(-1, 1)
    t = lam * z + (1.0 - lam) * partners(z, draw.perm)
    return t.detach() if detach else t


def sem_distance(z_mix: torch.Tensor, z_clean: torch.Tensor, draw: MixDraw, cfg: SEMConfig) -> torch.Tensor:
    """The SEM term ``D(g(x~), t)`` with ``D`` the squared error: ``() float32``.

    ``cfg.sem_reduction == 'mean'``: mean over batch and features (``F.mse_loss``);
    ``'sum'``: squared L2 norm per sample, averaged over the batch.
    """
    diff = upcast(z_mix) - sem_target(z_clean, draw, cfg.detach_target)
    sq = diff * diff
    return sq.mean() if cfg.sem_reduction == "mean" else sq.sum(1).mean()


def sem_loss(
    logits: torch.Tensor,
    z_mix: torch.Tensor,
    z_clean: torch.Tensor | None,
    labels: torch.Tensor,
    draw: MixDraw,
    cfg: SEMConfig,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mixed cross-entropy plus ``gamma`` times the SEM term.

    Args:
        logits: ``(B, K)`` fp32|bf16|fp16|fp64, ``h(g(x~))``.
        z_mix: ``(B, D)`` fp32|bf16|fp16|fp64, ``g(x~)``.
        z_clean: ``(B, D)``, ``g(x)`` of the clean batch, or ``None`` when the step skipped the
            clean pass (``gamma == 0`` or no mixing): the SEM term is then 0.
        labels: ``(B,)`` int64|int32 in ``[0, K)``.
        draw: the `MixDraw` the images were mixed with.
        cfg: ``gamma``, ``sem_reduction``, ``detach_target`` and ``label_smoothing`` are used.

    Returns:
        ``(loss, ce, sem)``, each a ``() float32`` tensor (float64 for float64 input),
        ``loss = ce + cfg.gamma * sem``. When ``draw.perm`` is not a permutation, ``loss``,
        ``ce`` and (if computed) ``sem`` are NaN, and so are their gradients; a bad label or
        partner makes ``ce`` NaN (and ``sem`` for a bad partner).
    """
    paired = is_permutation(draw.perm)
    ce = nan_unless(paired, mixed_cross_entropy(logits, labels, draw, cfg))
    if z_clean is None:
        sem = torch.zeros_like(ce)
        return ce, ce, sem
    sem = nan_unless(paired, sem_distance(z_mix, z_clean, draw, cfg))
    return ce + cfg.gamma * sem, ce, sem
