"""The compiled backend, ``backend='cuda'``: the two fused ops as C++ (CPU) and CUDA kernels.

The kernels live in ``csrc/`` and are built by ``setup.py`` into ``sem_fast._C``, which
registers the ops ``torch.ops.sem_fast_ext.{mix_images, mix_images_backward, sem_loss,
mixed_ce_backward, sem_distance_backward}`` for the CPU and (when built with nvcc against a CUDA
torch) the CUDA dispatch keys. This module adds their fake kernels (so ``torch.compile`` traces
them) and their autograd, and exposes the ops with the signatures and semantics of
`sem_fast.reference`; `sem_fast.backends` imports it on first use of ``backend='cuda'``. Without
the built extension it still imports, and `probe` says why the ops are unavailable and how to
build them.
"""

from __future__ import annotations

import importlib

import torch

from sem_fast import backends
from sem_fast._checks import check_loss_args, check_mix_args
from sem_fast.config import SEMConfig
from sem_fast.sampling import AugmentDraw, MixDraw

BUILD_HINT = (
    "build it from the repository root with `pip install --no-deps --no-build-isolation -e .` "
    "(needs a C++ compiler; the CUDA kernels also need a CUDA build of torch and nvcc on CUDA_HOME; "
    "SEM_FAST_NO_EXT must be unset, SEM_FAST_REQUIRE_EXT=1 shows why a build fails)"
)


def _load_library() -> str | None:
    """Load ``sem_fast._C``; ``None`` on success, else why it cannot be used."""
    try:
        importlib.import_module("sem_fast._C")
    except (ImportError, OSError) as error:
        return f"the compiled extension sem_fast._C is not available ({error}); {BUILD_HINT}"
    return None


_LOAD_ERROR = _load_library()


def probe(device_type: str) -> str | None:
    """``None`` if the compiled ops run on ``device_type``, else the reason they do not."""
    if _LOAD_ERROR is not None:
        return _LOAD_ERROR
    if device_type == "cpu":
        return None
    if device_type == "cuda":
        if torch._C._dispatch_has_kernel_for_dispatch_key("sem_fast_ext::mix_images", "CUDA"):
            return None
        return (
            "sem_fast._C was built without CUDA kernels (torch had no CUDA or nvcc was not found at "
            f"build time); {BUILD_HINT}"
        )
    return f"the compiled extension has kernels for cpu and cuda only, not {device_type}"


# ---------------------------------------------------------------------------------------------
# Public entry points (reference signatures)
# ---------------------------------------------------------------------------------------------


def mix_images(
    images: torch.Tensor, draw: MixDraw, cfg: SEMConfig, *, augment: AugmentDraw | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """`sem_fast.reference.mix_images` with the compiled kernels: one pass writes both outputs.

    ``images (B, H, W, C) uint8`` or ``(B, C, H, W)`` fp32|bf16|fp16 -> ``(x_clean, x_mix)``,
    ``(B, C, H, W)`` in ``cfg.resolve_out_dtype(images)``, channels_last if ``cfg.channels_last``.
    Raises ``ValueError`` when the extension cannot run on the images' device.
    """
    check_mix_args(images, draw, cfg, augment)
    backends.get_backend("cuda", images.device)
    return mix_images_unchecked(images, draw, cfg, augment)


def mix_images_unchecked(
    images: torch.Tensor, draw: MixDraw, cfg: SEMConfig, augment: AugmentDraw | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """`mix_images` for arguments already checked (by `fused_sem_step`)."""
    offset, flip = (augment.offset, augment.flip) if augment is not None else (None, None)
    x_clean, x_mix = torch.ops.sem_fast_ext.mix_images(
        images,
        draw.perm,
        draw.lam,
        draw.box,
        draw.is_cutmix,
        offset,
        flip,
        list(cfg.mean),
        list(cfg.std),
        cfg.crop_padding,
        cfg.padding_mode == "reflect",
        cfg.resolve_out_dtype(images),
        cfg.channels_last,
        cfg.mixes,
    )
    return (x_clean, x_mix) if cfg.mixes else (x_clean, x_clean)


def sem_loss(
    logits: torch.Tensor,
    z_mix: torch.Tensor,
    z_clean: torch.Tensor | None,
    labels: torch.Tensor,
    draw: MixDraw,
    cfg: SEMConfig,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`sem_fast.reference.sem_loss` with the compiled kernels.

    ``logits (B, K)``, ``z_mix (B, D)``, ``z_clean (B, D)`` or ``None`` (fp32|bf16|fp16),
    ``labels (B,) int64|int32`` -> ``(loss, ce, sem)``, each ``() float32``.
    Raises ``ValueError`` when the extension cannot run on the labels' device.
    """
    check_loss_args(logits, z_mix, z_clean, labels, draw, cfg)
    backends.get_backend("cuda", labels.device)
    return sem_loss_unchecked(logits, z_mix, z_clean, labels, draw, cfg)


def sem_loss_unchecked(
    logits: torch.Tensor,
    z_mix: torch.Tensor,
    z_clean: torch.Tensor | None,
    labels: torch.Tensor,
    draw: MixDraw,
    cfg: SEMConfig,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`sem_loss` for arguments already checked (by `fused_sem_step`)."""
    if z_clean is not None and cfg.detach_target:
        z_clean = z_clean.detach()
    loss, ce, sem, _ = torch.ops.sem_fast_ext.sem_loss(
        logits, z_mix, z_clean, labels, draw.perm, draw.lam, cfg.label_smoothing, cfg.gamma, cfg.sem_reduction == "mean"
    )
    return loss, ce, sem


# ---------------------------------------------------------------------------------------------
# Fake kernels and autograd of the C++ ops
# ---------------------------------------------------------------------------------------------


def _fake_mix_images(
    images, perm, lam, box, is_cutmix, offset, flip, mean, std, crop_padding, reflect, out_dtype, channels_last, mixes
):
    if images.dtype == torch.uint8:
        B, H, W, C = images.shape
    else:
        B, C, H, W = images.shape
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x_clean = torch.empty((B, C, H, W), dtype=out_dtype, device=images.device, memory_format=fmt)
    if not mixes:
        return x_clean, images.new_empty((0,), dtype=out_dtype)
    return x_clean, torch.empty((B, C, H, W), dtype=out_dtype, device=images.device, memory_format=fmt)


def _fake_mix_images_backward(
    grad_clean, grad_mix, perm, lam, box, is_cutmix, offset, flip, crop_padding, reflect, in_dtype
):
    grad = grad_clean if grad_clean is not None else grad_mix
    return grad.new_empty(grad.shape, dtype=in_dtype)


def _fake_sem_loss(logits, z_mix, z_clean, labels, perm, lam, label_smoothing, gamma, sem_mean):
    loss, ce, sem = (logits.new_empty((), dtype=torch.float32) for _ in range(3))
    return loss, ce, sem, logits.new_empty(labels.shape, dtype=torch.float32)


def _fake_mixed_ce_backward(grad, logits, labels, perm, lam, lse, label_smoothing):
    return logits.new_empty(logits.shape)


def _fake_sem_distance_backward(grad, z_mix, z_clean, perm, lam, sem_mean, with_clean):
    dz_clean = z_clean.new_empty(z_clean.shape if with_clean else (0,))
    return z_mix.new_empty(z_mix.shape), dz_clean


def _mix_setup_context(ctx, inputs, output) -> None:
    images, perm, lam, box, is_cutmix, offset, flip, _, _, crop_padding, reflect, _, _, mixes = inputs
    ctx.set_materialize_grads(False)  # an unused output's gradient stays None: no kernel work for it
    ctx.save_for_backward(perm, lam, box, is_cutmix, offset, flip)
    ctx.crop_padding, ctx.reflect, ctx.mixes, ctx.in_dtype = crop_padding, reflect, mixes, images.dtype


def _mix_backward(ctx, grad_clean, grad_mix):
    """``d images = d x_clean`` gathered back through the crop/flip, plus the mix's share from
    the sample itself and from the sample whose partner it is (no atomics)."""
    perm, lam, box, is_cutmix, offset, flip = ctx.saved_tensors
    grad_mix = grad_mix if ctx.mixes else None
    grad_images = None
    if ctx.needs_input_grad[0] and (grad_clean is not None or grad_mix is not None):
        grad_images = torch.ops.sem_fast_ext.mix_images_backward(
            grad_clean, grad_mix, perm, lam, box, is_cutmix, offset, flip,
            ctx.crop_padding, ctx.reflect, ctx.in_dtype,
        )  # fmt: skip
    return (grad_images,) + (None,) * 13


def _loss_setup_context(ctx, inputs, output) -> None:
    logits, z_mix, z_clean, labels, perm, lam, label_smoothing, gamma, sem_mean = inputs
    lse = output[3]
    ctx.mark_non_differentiable(lse)
    ctx.set_materialize_grads(False)  # an unused output's gradient stays None: no kernel work for it
    ctx.save_for_backward(logits, z_mix, z_clean, labels, perm, lam, lse)
    ctx.label_smoothing, ctx.gamma, ctx.sem_mean = label_smoothing, gamma, sem_mean


def _loss_backward(ctx, grad_loss, grad_ce, grad_sem, _grad_lse):
    """``loss = ce + gamma * sem``: the CE kernel gets ``g_loss + g_ce``, the SEM kernel
    ``gamma * g_loss + g_sem`` (None: that output is unused); ``dz_clean`` only where
    ``z_clean`` requires grad."""
    logits, z_mix, z_clean, labels, perm, lam, lse = ctx.saved_tensors
    grad_ce_total = _sum_present(grad_loss, grad_ce)
    grad_sem_total = _sum_present(None if grad_loss is None else ctx.gamma * grad_loss, grad_sem)
    d_logits = d_z_mix = d_z_clean = None
    if ctx.needs_input_grad[0] and grad_ce_total is not None:
        d_logits = torch.ops.sem_fast_ext.mixed_ce_backward(
            grad_ce_total, logits, labels, perm, lam, lse, ctx.label_smoothing
        )
    if z_clean is not None and grad_sem_total is not None and (ctx.needs_input_grad[1] or ctx.needs_input_grad[2]):
        with_clean = ctx.needs_input_grad[2]
        d_z_mix, d_z_clean = torch.ops.sem_fast_ext.sem_distance_backward(
            grad_sem_total, z_mix, z_clean, perm, lam, ctx.sem_mean, with_clean
        )
        d_z_clean = d_z_clean if with_clean else None
    return d_logits, d_z_mix, d_z_clean, None, None, None, None, None, None


def _sum_present(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    """``a + b`` where an absent (None) gradient counts as zero; None when both are."""
    if a is None or b is None:
        return b if a is None else a
    return a + b


def _register_fakes_and_autograd() -> None:
    for name, fake in (
        ("mix_images", _fake_mix_images),
        ("mix_images_backward", _fake_mix_images_backward),
        ("sem_loss", _fake_sem_loss),
        ("mixed_ce_backward", _fake_mixed_ce_backward),
        ("sem_distance_backward", _fake_sem_distance_backward),
    ):
        torch.library.register_fake(f"sem_fast_ext::{name}", fake)
    torch.library.register_autograd("sem_fast_ext::mix_images", _mix_backward, setup_context=_mix_setup_context)
    torch.library.register_autograd("sem_fast_ext::sem_loss", _loss_backward, setup_context=_loss_setup_context)


if _LOAD_ERROR is None:
    _register_fakes_and_autograd()
