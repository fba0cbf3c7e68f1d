"""`fused_sem_step`: one SEM training step (mix, clean pass, mixed pass, loss) without backward."""

from __future__ import annotations

import contextlib
from typing import NamedTuple, Protocol

import torch

from sem_fast._checks import (
    check_augment,
    check_channels,
    check_draw,
    check_features,
    check_images,
    check_labels,
    check_padding,
)
from sem_fast.config import SEMConfig
from sem_fast.draws import AugmentDraw, MixDraw
from sem_fast.ops.registry import get_backend
from sem_fast.sampling import sample_augment, sample_draw, sample_step_draws


class EncoderClassifier(Protocol):
    """A model split as ``f = classify . encode`` (see `sem_fast.models.split`).

    It may also have an int ``num_classes`` (K, the logits per sample; every model of
    `sem_fast.models` and of `split` has it), which lets `fused_sem_step` check the labels
    before running the model.
    """

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` images -> ``(B, D)`` pooled penultimate features."""

    def classify(self, z: torch.Tensor) -> torch.Tensor:
        """``(B, D)`` features -> ``(B, K)`` logits (a linear layer)."""


class StepOutput(NamedTuple):
    """What `fused_sem_step` returns.

    Attributes:
        loss: ``() float32``, ``ce + cfg.gamma * sem``; call ``backward()`` on it.
        ce: ``() float32``, the mixed cross-entropy.
        sem: ``() float32``, the SEM term (0 when the clean pass is skipped).
        logits: ``(B, K)``, logits of the mixed batch.
        draw: the `MixDraw` used.
        augment: the `AugmentDraw` used, or ``None`` without augmentation.
    """

    loss: torch.Tensor
    ce: torch.Tensor
    sem: torch.Tensor
    logits: torch.Tensor
    draw: MixDraw
    augment: AugmentDraw | None = None


def fused_sem_step(
    model: EncoderClassifier,
    images: torch.Tensor,
    labels: torch.Tensor,
    cfg: SEMConfig,
    *,
    generator: torch.Generator | None = None,
    draw: MixDraw | None = None,
    augment: AugmentDraw | None = None,
    check_values: bool = True,
) -> StepOutput:
    """Run one SEM step and return its loss; the caller runs ``backward()`` and the optimizer.

    1. Normalize, augment (``cfg.crop_padding``/``cfg.hflip``) and mix ``images`` (one fused op
       on the fast backends) with ``augment`` and ``draw``, sampled on the device when not given.
    2. Clean pass ``z = model.encode(x_clean)``, under ``no_grad`` when ``cfg.detach_target``;
       skipped when there is no SEM term (``cfg.gamma == 0`` or no mixing).
    3. Mixed pass ``z_mix = model.encode(x_mix)``, ``logits = model.classify(z_mix)``.
    4. ``loss = mixed CE + cfg.gamma * ||z_mix - (lam * z + (1 - lam) * z[perm])||^2``.

    Because it stops at the loss, it composes with AMP (run it under ``torch.autocast``),
    gradient scalers, DDP, gradient accumulation and ``torch.compile``.

    Every argument is checked before the first forward pass, so a rejected batch leaves the model
    (BatchNorm's running statistics included) untouched. The label range needs the number of
    classes: it is read from ``model.num_classes``; a model without one has its labels checked
    against the logits after the forward passes. What depends on the model's outputs (the
    logits' and features' shapes and dtypes) is checked after them.

    Args:
        model: has ``encode`` and ``classify`` (`sem_fast.models`, or any model through
            `sem_fast.models.split`).
        images: ``(B, H, W, C) uint8`` as loaders produce it, or ``(B, C, H, W)`` float32 /
            bfloat16 / float16 already normalized.
        labels: ``(B,) int64|int32`` class indices in ``[0, K)`` on the images' device.
        cfg: the `SEMConfig`.
        generator: drives the sampling of the draws not given (`sample_step_draws`; a generator
            on the images' device).
        draw: a fixed `MixDraw` to use instead of sampling one (tests, replays).
        augment: a fixed `AugmentDraw` to use instead of sampling one (needs ``cfg.augments``).
        check_values: check the values of ``labels``, ``draw`` and ``augment`` (label range,
            permutation, lambda range, boxes, crop offsets: one host sync on CUDA). False skips
            these checks only, for a step without host syncs; every type, dtype, shape and
            device is still checked, and bad values give a NaN loss (`sem_fast.reference`).

    Raises:
        TypeError, ValueError: naming the bad argument and what was expected.
    """
    if not isinstance(cfg, SEMConfig):
        raise TypeError(f"cfg must be a SEMConfig, got {type(cfg).__name__}")
    for method in ("encode", "classify"):
        if not callable(getattr(model, method, None)):
            raise TypeError(
                f"model must have an {method}() method; wrap it with sem_fast.models.split(model)"
            )
    B, _, H, W = check_images(images)
    check_channels(images, cfg)
    device = images.device
    num_classes = model_num_classes(model)
    check_labels(labels, B, device, num_classes, check_values)
    if draw is not None:
        check_draw(draw, B, device, (H, W), check_values)
    if augment is not None:
        if not cfg.augments:
            raise ValueError("augment was given but cfg has no augmentation (crop_padding=0, hflip=False)")
        check_augment(augment, B, device, (H, W), cfg, check_values)
    elif cfg.augments:
        check_padding(cfg, (H, W))
    if draw is None and augment is None and cfg.augments:
        draw, augment = sample_step_draws(B, H, W, cfg, device=device, generator=generator)
    elif draw is None:
        draw = sample_draw(B, H, W, cfg, device=device, generator=generator)
    elif augment is None and cfg.augments:
        augment = sample_augment(B, cfg, device=device, generator=generator)
    mix_backend = get_backend(cfg.backend, device, images, lam=draw.lam)

    x_clean, x_mix = mix_backend.mix_images(images, draw, cfg, augment)
    z_clean = None
    if cfg.uses_clean_pass:
        with torch.no_grad() if cfg.detach_target else contextlib.nullcontext():
            z_clean = model.encode(x_clean)
    z_mix = model.encode(x_mix)
    logits = model.classify(z_mix)
    K = check_features(logits, z_mix, z_clean, B, device)
    if num_classes is None:
        check_labels(labels, B, device, K, check_values)
    elif K != num_classes:
        raise ValueError(f"model.classify returned {K} logits per sample but model.num_classes is {num_classes}")
    backend = get_backend(cfg.backend, device, logits, z_mix, z_clean, lam=draw.lam)
    loss, ce, sem = backend.sem_loss(logits, z_mix, z_clean, labels, draw, cfg)
    return StepOutput(loss, ce, sem, logits, draw, augment)


def model_num_classes(model: EncoderClassifier) -> int | None:
    """``model.num_classes`` when it is a positive int (K, known without a forward pass), else None."""
    k = getattr(model, "num_classes", None)
    return k if isinstance(k, int) and not isinstance(k, bool) and k > 0 else None
