"""The public fused ops: check every argument once, then run the chosen backend's unchecked kernel.

    from sem_fast import mix_images, sem_loss
    x_clean, x_mix = mix_images(images, draw, cfg, augment=augment)
    loss, ce, sem = sem_loss(logits, z_mix, z_clean, labels, draw, cfg)

``cfg.backend`` picks the backend per op (`sem_fast.ops.registry`); every backend computes
exactly what the specification `sem_fast.reference` computes. ``check_values=False`` skips the
checks that read tensor values (label range, permutation, lambda range, boxes, crop offsets: a
host sync on CUDA) and keeps every metadata check (type, dtype, shape, device); bad values then
give NaN, never an out-of-bounds read (`sem_fast.reference` says which).
"""

from __future__ import annotations

import torch

from sem_fast._checks import check_loss_args, check_mix_args
from sem_fast.config import SEMConfig
from sem_fast.draws import AugmentDraw, MixDraw
from sem_fast.ops.registry import get_backend


def mix_images(
    images: torch.Tensor,
    draw: MixDraw,
    cfg: SEMConfig,
    *,
    augment: AugmentDraw | None = None,
    check_values: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalize, optionally augment, and mix a batch: one fused pass on the fast backends.

    Args:
        images: ``(B, H, W, C) uint8`` as loaders produce it, or ``(B, C, H, W)``
            float32|bf16|fp16 (float64: reference only) already normalized, any memory format.
        draw: the `MixDraw` (``perm (B,) int64``, ``lam (B,) fp32``, ``box (B, 4) int32``,
            ``is_cutmix (B,) bool``) on the images' device.
        cfg: ``mean``/``std``, ``crop_padding``/``padding_mode``, ``out_dtype``,
            ``channels_last``, ``backend`` and whether it ``mixes`` are used.
        augment: `AugmentDraw` (``offset (B, 2) int32``, ``flip (B,) bool``) applied to the clean
            images before mixing, or ``None``.
        check_values: check ``perm``, ``lam``, the boxes and the crop offsets (a host sync on
            CUDA); False skips these checks only.

    Returns:
        ``(x_clean, x_mix)``, ``(B, C, H, W)`` in ``cfg.resolve_out_dtype(images)``, in
        ``channels_last`` memory format if ``cfg.channels_last``; ``x_mix is x_clean`` when
        ``cfg.mixes`` is False. Differentiable w.r.t. float ``images``. See
        `sem_fast.reference.mix_images` for the formulas.

    Raises:
        TypeError, ValueError: naming the bad argument and what was expected (also when the
            backend named by ``cfg.backend`` cannot take the input, e.g. a ``draw.lam`` that
            requires grad, which only the reference differentiates).
    """
    check_mix_args(images, draw, cfg, augment, check_values)
    return get_backend(cfg.backend, images.device, images, lam=draw.lam).mix_images(images, draw, cfg, augment)


def sem_loss(
    logits: torch.Tensor,
    z_mix: torch.Tensor,
    z_clean: torch.Tensor | None,
    labels: torch.Tensor,
    draw: MixDraw,
    cfg: SEMConfig,
    *,
    check_values: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mixed cross-entropy plus ``cfg.gamma`` times the SEM term: one fused kernel per direction on
    the fast backends.

    Args:
        logits: ``(B, K)`` fp32|bf16|fp16 (float64: reference only), ``h(g(x~))``.
        z_mix: ``(B, D)``, ``g(x~)``, same dtypes.
        z_clean: ``(B, D)``, ``g(x)`` of the clean batch, or ``None``: no SEM term (``sem`` is 0).
        labels: ``(B,)`` int64|int32 in ``[0, K)``.
        draw: the `MixDraw` the images were mixed with (``perm`` and ``lam`` are used).
        cfg: ``gamma``, ``sem_reduction``, ``detach_target``, ``label_smoothing`` and ``backend``.
        check_values: check the label range, ``perm`` and ``lam`` (a host sync on CUDA); False
            skips these checks only.

    Returns:
        ``(loss, ce, sem)``, each a ``() float32`` tensor, ``loss = ce + cfg.gamma * sem``;
        differentiable w.r.t. ``logits``, ``z_mix`` and (unless ``cfg.detach_target``)
        ``z_clean``. See `sem_fast.reference.sem_loss` for the formulas.

    Raises:
        TypeError, ValueError: naming the bad argument and what was expected (also when the
            backend named by ``cfg.backend`` cannot take the input, e.g. a ``draw.lam`` that
            requires grad, which only the reference differentiates).
    """
    check_loss_args(logits, z_mix, z_clean, labels, draw, cfg, check_values)
    backend = get_backend(cfg.backend, labels.device, logits, z_mix, z_clean, lam=draw.lam)
    return backend.sem_loss(logits, z_mix, z_clean, labels, draw, cfg)
