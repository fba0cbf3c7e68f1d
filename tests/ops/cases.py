"""Inputs of the fused-op tests, shared by every backend's suite: image batches in each accepted
layout, draws, loss problems, their plain-PyTorch low-precision versions, and the argument list
of the raw mix op."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sem_fast import MixDraw, SEMConfig, sample_draw
from sem_fast import reference as ref
from sem_fast.draws import AugmentDraw

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
IMAGE_KINDS = ["uint8", "uint8_strided", "float", "float_channels_last", "float_strided"]


# --- the mix op ---------------------------------------------------------------------------------


def mix_cfg(channels: int, **changes) -> SEMConfig:
    """A config whose mean/std have one value per channel (CIFAR's for 3 channels)."""
    stats = {} if channels == 3 else dict(mean=(0.45,) * channels, std=(0.25,) * channels)
    return SEMConfig(**stats).replace(**changes)


def images(kind: str, B: int, C: int, H: int, W: int, dtype: torch.dtype, gen: torch.Generator) -> torch.Tensor:
    """A batch in one of the accepted layouts (`IMAGE_KINDS`): uint8 NHWC (dense, or a column
    slice), float NCHW in ``dtype`` (contiguous, channels_last, or every other column)."""
    if kind.startswith("uint8"):
        x = torch.randint(0, 256, (B, H, W + 2, C), dtype=torch.uint8, generator=gen)
        return x[:, :, 1 : W + 1] if kind == "uint8_strided" else x[:, :, :W].contiguous()
    x = torch.randn(B, C, H, 2 * W, generator=gen).to(dtype)
    if kind == "float_strided":
        return x[..., ::2]
    x = x[..., :W].contiguous()
    return x.to(memory_format=torch.channels_last) if kind == "float_channels_last" else x


def switch_draw(B: int, H: int, W: int, gen: torch.Generator) -> MixDraw:
    """A draw mixing even samples by CutMix and odd ones by mixup, one random permutation."""
    cut = sample_draw(B, H, W, SEMConfig(mix="cutmix", lam_mode="elem"), device="cpu", generator=gen)
    lerp = sample_draw(B, H, W, SEMConfig(mix="mixup", lam_mode="elem"), device="cpu", generator=gen)
    is_cutmix = torch.arange(B) % 2 == 0
    return MixDraw(
        perm=cut.perm,
        lam=torch.where(is_cutmix, cut.lam, lerp.lam),
        box=torch.where(is_cutmix[:, None], cut.box, torch.zeros_like(cut.box)),
        is_cutmix=is_cutmix,
    )


def given_draw(perm, lam, box=None, is_cutmix=None) -> MixDraw:
    """A draw from plain lists (or tensors); without ``box``/``is_cutmix`` every sample is mixup."""
    B = len(lam)
    return MixDraw(
        perm=torch.as_tensor(perm),
        lam=torch.tensor(lam, dtype=torch.float32),
        box=torch.zeros(B, 4, dtype=torch.int32) if box is None else torch.tensor(box, dtype=torch.int32),
        is_cutmix=torch.zeros(B, dtype=torch.bool) if is_cutmix is None else torch.tensor(is_cutmix),
    )


def plain_mix(images, draw, cfg, augment, dtype):
    """Plain PyTorch with the mix arithmetic in ``dtype`` (uint8 is normalized in fp32 first)."""
    uint8 = images.dtype == torch.uint8
    x = ref.as_float_nchw(images) if uint8 else images
    if augment is not None:
        x = ref.augment_images(x, augment, cfg)
    x = ref.normalize_units(x, uint8, cfg).to(dtype)
    B, _, H, W = x.shape
    partner = x[draw.perm]
    lam = draw.lam.to(dtype).view(B, 1, 1, 1)
    lerp = lam * x + (1 - lam) * partner
    paste = torch.where(ref.box_mask(draw.box, H, W), partner, x)
    return x, torch.where(draw.is_cutmix.view(B, 1, 1, 1), paste, lerp)


def mix_op_args(images, draw: MixDraw, cfg: SEMConfig, augment: AugmentDraw | None) -> tuple:
    """The arguments of a backend's raw ``torch.ops.<namespace>.mix_images`` (one schema for every
    backend: `sem_fast.ops.schema`) for `mix_images(images, draw, cfg, augment=...)`."""
    offset, flip = (None, None) if augment is None else augment
    return (
        images, *draw, offset, flip, list(cfg.mean), list(cfg.std), cfg.crop_padding, cfg.padding_mode == "reflect",
        cfg.resolve_out_dtype(images), cfg.channels_last, cfg.mixes,
    )  # fmt: skip


# --- the loss op --------------------------------------------------------------------------------


def problem(B, K, D, dtype, gen, *, layout="contiguous", labels_dtype=torch.int64):
    """``(logits (B, K), z_mix (B, D), z_clean (B, D), labels (B,))``; ``layout='strided'`` gives
    non-contiguous views (a column slice and a transpose)."""
    if layout == "strided":
        logits = (3 * torch.randn(B, 2 * K, generator=gen)).to(dtype)[:, ::2]
        z_mix, z_clean = (torch.randn(D, B, generator=gen).to(dtype).t() for _ in range(2))
    else:
        logits = (3 * torch.randn(B, K, generator=gen)).to(dtype)
        z_mix, z_clean = (torch.randn(B, D, generator=gen).to(dtype) for _ in range(2))
    labels = torch.randint(0, K, (B,), generator=gen).to(labels_dtype)
    return logits, z_mix, z_clean, labels


def elem_draw(B: int, gen: torch.Generator) -> MixDraw:
    """A draw with one λ per sample (the loss uses only ``perm`` and ``lam``)."""
    return sample_draw(B, 8, 8, SEMConfig(lam_mode="elem"), device="cpu", generator=gen)


def plain_loss(logits, z_mix, z_clean, labels, draw, cfg):
    """The SEM loss with every operation in the inputs' (low) dtype, by plain PyTorch."""
    dtype = logits.dtype
    targets = ref.mixed_targets(labels, draw, logits.shape[1], cfg.label_smoothing).to(dtype)
    ce = -(targets * F.log_softmax(logits, dim=1)).sum(1).mean()
    if z_clean is None:
        return ce, ce, torch.zeros((), dtype=dtype, device=logits.device)
    lam = draw.lam.to(dtype).view(-1, 1)
    target = lam * z_clean + (1 - lam) * z_clean[draw.perm]
    diff = z_mix - (target.detach() if cfg.detach_target else target)
    sq = diff * diff
    sem = sq.mean() if cfg.sem_reduction == "mean" else sq.sum(1).mean()
    return ce + cfg.gamma * sem, ce, sem


# --- devices ------------------------------------------------------------------------------------


def to_device(device: torch.device | str, *items):
    """Tensors, draws (`MixDraw`, `AugmentDraw`) and ``None`` moved to ``device``, as a list;
    tensors on the meta device stay there."""

    def move(t):
        return t if t is None or t.device.type == "meta" else t.to(device)

    return [type(item)(*map(move, item)) if isinstance(item, tuple) else move(item) for item in items]
