"""The two fused ops, defined once for every backend: schemas, fake kernels, autograd, call wrappers.

Each fast backend is a ``torch.library`` namespace holding the same four ops with the same
schemas (`SCHEMAS`): ``sem_fast_triton`` (Triton kernels, `sem_fast.ops.triton`) and
``sem_fast_native`` (the C++ and CUDA kernels of ``csrc/``, `sem_fast.ops.native`). This module
defines both namespaces, and registers for every op of both one fake kernel (so
``torch.compile`` traces them) and one autograd (``setup_context`` + backward); a backend
registers only its device kernels (``Library.impl`` from Python, ``TORCH_LIBRARY_IMPL`` from C++,
which the dispatcher checks against these schemas when the library loads). `FusedOps` turns a
namespace into the reference's signatures (`sem_fast.reference.mix_images` /
`sem_fast.reference.sem_loss`), the backends' unchecked entry points.

Why one namespace per backend and not one op with a kernel per dispatch key: both fast backends
run on CUDA, and an op holds one CUDA kernel.

Saved for the backward: the mix op saves the draw (it is linear in its input); the loss op saves
its inputs, ``row_stats (B, 2) float32``, the row max ``m`` and ``log sum exp(logits - m)``
of each row, from which the backward recomputes the softmax relative to the row max (accurate
for logits of any magnitude), so no ``(B, K)`` buffer lives between forward and backward, and
``inv_perm (B,) int64``, the inverse permutation the forward builds while it checks that
``perm`` is one (the backward gathers ``z_clean``'s gradient through it).
"""

from __future__ import annotations

import torch

from sem_fast.config import SEMConfig
from sem_fast.draws import AugmentDraw, MixDraw

#: Op name -> schema (arguments and outputs), shared by every backend namespace.
SCHEMAS: dict[str, str] = {
    # images (B, H, W, C) uint8 or (B, C, H, W) float -> (x_clean, x_mix), (B, C, H, W) out_dtype, in
    # channels_last memory format if channels_last; x_mix is an empty (0,) tensor when mixes is false
    # (an op output may not alias another). mean/std (0..1 units) are read for uint8 input only.
    "mix_images": (
        "(Tensor images, Tensor perm, Tensor lam, Tensor box, Tensor is_cutmix, Tensor? offset, Tensor? flip, "
        "float[] mean, float[] std, int crop_padding, bool reflect, ScalarType out_dtype, bool channels_last, "
        "bool mixes) -> (Tensor, Tensor)"
    ),
    # Gradient w.r.t. float images, (B, C, H, W) in_dtype (channels_last memory format if
    # channels_last), from the gradients of x_clean and x_mix: an absent one counts as zeros, at
    # least one is given.
    "mix_images_backward": (
        "(Tensor? grad_clean, Tensor? grad_mix, Tensor perm, Tensor lam, Tensor box, Tensor is_cutmix, "
        "Tensor? offset, Tensor? flip, int crop_padding, bool reflect, ScalarType in_dtype, bool channels_last) "
        "-> Tensor"
    ),
    # -> (loss, ce, sem) () float32, row_stats (B, 2) float32 (row max, log-sum-exp relative to
    # it) and inv_perm (B,) int64 (inv_perm[perm[b]] = b). A perm that is not a permutation makes
    # loss, ce and (with z_clean) sem NaN and every row's statistics (NaN, -inf), so that every
    # gradient is NaN.
    "sem_loss": (
        "(Tensor logits, Tensor z_mix, Tensor? z_clean, Tensor labels, Tensor perm, Tensor lam, float gamma, "
        "float label_smoothing, bool sem_mean) -> (Tensor, Tensor, Tensor, Tensor, Tensor)"
    ),
    # (dlogits (B, K), dz_mix (B, D), dz_clean (B, D)) in their inputs' dtypes, each an empty (0,)
    # tensor unless its *_grad flag is set. The incoming gradients of loss, ce and sem (absent: zero)
    # combine as d ce = g_loss + g_ce and d sem = gamma * g_loss + g_sem.
    "sem_loss_backward": (
        "(Tensor? grad_loss, Tensor? grad_ce, Tensor? grad_sem, Tensor logits, Tensor z_mix, Tensor? z_clean, "
        "Tensor labels, Tensor perm, Tensor lam, Tensor row_stats, Tensor inv_perm, float gamma, "
        "float label_smoothing, bool sem_mean, bool logits_grad, bool z_mix_grad, bool z_clean_grad) "
        "-> (Tensor, Tensor, Tensor)"
    ),
}

TRITON = "sem_fast_triton"
NATIVE = "sem_fast_native"
#: Fast backend name (``SEMConfig.backend``) -> its op namespace.
NAMESPACES: dict[str, str] = {"triton": TRITON, "native": NATIVE}


# ----------------------------------------------------------------------------- fake kernels


def memory_format(channels_last: bool) -> torch.memory_format:
    """``torch.channels_last`` or ``torch.contiguous_format``."""
    return torch.channels_last if channels_last else torch.contiguous_format


def nchw_size(images: torch.Tensor) -> tuple[int, int, int, int]:
    """``(B, C, H, W)`` of a batch: uint8 input is ``(B, H, W, C)``, float input ``(B, C, H, W)``."""
    B, d1, d2, d3 = images.shape
    return (B, d3, d1, d2) if images.dtype == torch.uint8 else (B, d1, d2, d3)


def _fake_mix_images(
    images, perm, lam, box, is_cutmix, offset, flip, mean, std, crop_padding, reflect, out_dtype, channels_last, mixes
):
    clean = torch.empty(
        nchw_size(images), dtype=out_dtype, device=images.device, memory_format=memory_format(channels_last)
    )
    return clean, (torch.empty_like(clean) if mixes else clean.new_empty(0))


def _fake_mix_images_backward(
    grad_clean, grad_mix, perm, lam, box, is_cutmix, offset, flip, crop_padding, reflect, in_dtype, channels_last
):
    some = grad_clean if grad_clean is not None else grad_mix
    return torch.empty(some.shape, dtype=in_dtype, device=some.device, memory_format=memory_format(channels_last))


def _fake_sem_loss(logits, z_mix, z_clean, labels, perm, lam, gamma, label_smoothing, sem_mean):
    loss, ce, sem = (logits.new_empty((), dtype=torch.float32) for _ in range(3))
    B = logits.shape[0]
    return loss, ce, sem, logits.new_empty((B, 2), dtype=torch.float32), logits.new_empty(B, dtype=torch.int64)


def _fake_sem_loss_backward(
    grad_loss, grad_ce, grad_sem, logits, z_mix, z_clean, labels, perm, lam, row_stats, inv_perm,
    gamma, label_smoothing, sem_mean, logits_grad, z_mix_grad, z_clean_grad,
):  # fmt: skip
    def grad_of(t, needed):
        return torch.empty_like(t, memory_format=torch.contiguous_format) if needed else t.new_empty(0)

    dz_clean = grad_of(z_clean, z_clean_grad) if z_clean is not None else z_mix.new_empty(0)
    return grad_of(logits, logits_grad), grad_of(z_mix, z_mix_grad), dz_clean


# ----------------------------------------------------------------------------- autograd


def _mix_setup_context(ctx, inputs, output) -> None:
    images, perm, lam, box, is_cutmix, offset, flip, _, _, crop_padding, reflect, _, _, mixes = inputs
    ctx.save_for_backward(perm, lam, box, is_cutmix, offset, flip)
    ctx.crop_padding, ctx.reflect, ctx.mixes, ctx.in_dtype = crop_padding, reflect, mixes, images.dtype
    # The input's gradient in the input's memory format.
    ctx.channels_last = images.is_contiguous(memory_format=torch.channels_last) and not images.is_contiguous()
    if not mixes:
        ctx.mark_non_differentiable(output[1])
    # An unused output (x_clean after a no_grad clean pass) gets None, not a materialized zero image.
    ctx.set_materialize_grads(False)


def _mix_backward_op(ctx):
    return getattr(torch.ops, ctx.namespace).mix_images_backward


def _mix_backward(ctx, grad_clean, grad_mix):
    """``d images`` gathered back through the crop/flip and the mix: a sample's own share and
    the share of the sample whose partner it is (inverse permutation, no atomics)."""
    grad_mix = grad_mix if ctx.mixes else None
    if grad_clean is None and grad_mix is None:
        return (None,) * 14
    perm, lam, box, is_cutmix, offset, flip = ctx.saved_tensors
    grad = _mix_backward_op(ctx)(
        grad_clean, grad_mix, perm, lam, box, is_cutmix, offset, flip,
        ctx.crop_padding, ctx.reflect, ctx.in_dtype, ctx.channels_last,
    )  # fmt: skip
    return (grad,) + (None,) * 13


def _mix_backward_setup_context(ctx, inputs, output) -> None:
    grad_clean, grad_mix, perm, lam, box, is_cutmix, offset, flip, crop_padding, reflect, _, _ = inputs
    ctx.save_for_backward(perm, lam, box, is_cutmix, offset, flip)
    ctx.crop_padding, ctx.reflect = crop_padding, reflect
    some = grad_clean if grad_clean is not None else grad_mix
    ctx.has_clean, ctx.has_mix, ctx.grad_dtype = grad_clean is not None, grad_mix is not None, some.dtype
    ctx.channels_last = some.is_contiguous(memory_format=torch.channels_last) and not some.is_contiguous()
    ctx.set_materialize_grads(False)


def _mix_double_backward(ctx, grad_grad_images):
    """The mix backward is linear in the output gradients, with the forward as its adjoint:
    ``(d grad_clean, d grad_mix)`` is the clean and mixed image of ``grad_grad_images`` (float
    input: no normalization), so the gradient of a gradient runs the forward kernel."""
    if grad_grad_images is None:
        return (None,) * 12
    perm, lam, box, is_cutmix, offset, flip = ctx.saved_tensors
    clean, mixed = getattr(torch.ops, ctx.namespace).mix_images(
        grad_grad_images, perm, lam, box, is_cutmix, offset, flip, [], [],
        ctx.crop_padding, ctx.reflect, ctx.grad_dtype, ctx.channels_last, ctx.has_mix,
    )  # fmt: skip
    return (clean if ctx.has_clean else None, mixed if ctx.has_mix else None) + (None,) * 10


def _loss_setup_context(ctx, inputs, output) -> None:
    logits, z_mix, z_clean, labels, perm, lam, gamma, label_smoothing, sem_mean = inputs
    row_stats, inv_perm = output[3:]
    ctx.save_for_backward(logits, z_mix, z_clean, labels, perm, lam, row_stats, inv_perm)
    ctx.gamma, ctx.label_smoothing, ctx.sem_mean = gamma, label_smoothing, sem_mean
    ctx.mark_non_differentiable(row_stats, inv_perm)
    # Unused outputs (ce and sem are usually only logged) get None, not a materialized zero.
    ctx.set_materialize_grads(False)


def _loss_backward(ctx, grad_loss, grad_ce, grad_sem, _grad_row_stats, _grad_inv_perm):
    """One backward op for every input: ``dlogits`` when the CE term is reached, ``dz_mix`` and
    (target not detached) ``dz_clean`` when the SEM term is."""
    logits, z_mix, z_clean, labels, perm, lam, row_stats, inv_perm = ctx.saved_tensors
    reaches_ce = grad_loss is not None or grad_ce is not None
    reaches_sem = z_clean is not None and (grad_loss is not None or grad_sem is not None)
    need = (
        ctx.needs_input_grad[0] and reaches_ce,
        ctx.needs_input_grad[1] and reaches_sem,
        ctx.needs_input_grad[2] and reaches_sem,
    )
    if not any(need):
        return (None,) * 9
    grads = getattr(torch.ops, ctx.namespace).sem_loss_backward(
        grad_loss, grad_ce, grad_sem, logits, z_mix, z_clean, labels, perm, lam, row_stats, inv_perm,
        ctx.gamma, ctx.label_smoothing, ctx.sem_mean, *need,
    )  # fmt: skip
    return tuple(g if needed else None for g, needed in zip(grads, need)) + (None,) * 6


def _loss_backward_setup_context(ctx, inputs, output) -> None:
    pass


def _loss_double_backward(ctx, *grads):
    raise RuntimeError(
        f"{ctx.namespace}::sem_loss has no double backward (a gradient of its gradient, e.g. a gradient penalty "
        "through dlogits after backward(create_graph=True)); use SEMConfig(backend='reference'), plain PyTorch, "
        "for that"
    )


# ----------------------------------------------------------------------------- registration

_FAKES = {
    "mix_images": _fake_mix_images,
    "mix_images_backward": _fake_mix_images_backward,
    "sem_loss": _fake_sem_loss,
    "sem_loss_backward": _fake_sem_loss_backward,
}
_AUTOGRAD = {
    "mix_images": (_mix_backward, _mix_setup_context),
    "mix_images_backward": (_mix_double_backward, _mix_backward_setup_context),
    "sem_loss": (_loss_backward, _loss_setup_context),
    "sem_loss_backward": (_loss_double_backward, _loss_backward_setup_context),
}


def _with_namespace(function, namespace: str):
    """``function(ctx, ...)`` with ``ctx.namespace`` set first: one autograd serves every backend."""

    def bound(ctx, *args, **kwargs):
        ctx.namespace = namespace
        return function(ctx, *args, **kwargs)

    bound.__name__ = bound.__qualname__ = f"{namespace}_{function.__name__.lstrip('_')}"
    return bound


def _define(namespace: str) -> torch.library.Library:
    lib = torch.library.Library(namespace, "DEF")
    for name, schema in SCHEMAS.items():
        lib.define(name + schema)
        torch.library.register_fake(f"{namespace}::{name}", _FAKES[name], lib=lib)
        backward, setup_context = _AUTOGRAD[name]
        torch.library.register_autograd(
            f"{namespace}::{name}",
            _with_namespace(backward, namespace),
            setup_context=_with_namespace(setup_context, namespace),
            lib=lib,
        )
    return lib


_LIBRARIES = {namespace: _define(namespace) for namespace in NAMESPACES.values()}


# ----------------------------------------------------------------------------- call wrappers


class FusedOps:
    """A backend namespace's ops with the reference's signatures: its unchecked entry points
    (`sem_fast.ops.functional` checks the arguments first)."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace

    def mix_images(
        self, images: torch.Tensor, draw: MixDraw, cfg: SEMConfig, augment: AugmentDraw | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`sem_fast.reference.mix_images` through ``<namespace>::mix_images``."""
        offset, flip = (None, None) if augment is None else augment
        x_clean, x_mix = getattr(torch.ops, self.namespace).mix_images(
            images, *draw, offset, flip, list(cfg.mean), list(cfg.std), cfg.crop_padding,
            cfg.padding_mode == "reflect", cfg.resolve_out_dtype(images), cfg.channels_last, cfg.mixes,
        )  # fmt: skip
        return (x_clean, x_mix) if cfg.mixes else (x_clean, x_clean)

    def sem_loss(
        self,
        logits: torch.Tensor,
        z_mix: torch.Tensor,
        z_clean: torch.Tensor | None,
        labels: torch.Tensor,
        draw: MixDraw,
        cfg: SEMConfig,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`sem_fast.reference.sem_loss` through ``<namespace>::sem_loss``."""
        if z_clean is not None and cfg.detach_target:
            z_clean = z_clean.detach()
        loss, ce, sem, _, _ = getattr(torch.ops, self.namespace).sem_loss(
            logits, z_mix, z_clean, labels, draw.perm, draw.lam,
            float(cfg.gamma), float(cfg.label_smoothing), cfg.sem_reduction == "mean",
        )  # fmt: skip
        return loss, ce, sem
