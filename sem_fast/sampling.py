"""On-device sampling of the draws of a step: partner permutation, lambda, CutMix boxes, crop and flip.

Two samplers with the same distributions (`draw_sampler` says which one a call uses):

- ``'triton'``: one Triton kernel (`sem_fast.ops.triton.sampling`) writes the `MixDraw` and the
  `AugmentDraw` of a step from a 63-bit key that ``generator`` draws into a device tensor: two
  launches per step on CUDA (the key's ``random_`` and the kernel). Used on CUDA whenever Triton
  imports (except with ``backend='reference'``), and on the CPU with ``backend='triton'`` under
  ``TRITON_INTERPRET=1`` (tests).
- ``'torch'``: torch ops driven by ``generator`` (95-99 aten ops per draw, about 80 of them
  kernel launches on CUDA): the CPU, the ``'reference'`` backend, and devices Triton does not
  run on.

Both are free of host syncs and of tensors built from Python data (no ``.item()``, no numpy, no
``torch.tensor``), so a whole training step can be captured in a CUDA graph, and both are
functions of the generator's state: the same seed gives the same draws on the same sampler (the
two samplers give different, equally distributed, draws).
"""

from __future__ import annotations

import functools

import torch

from sem_fast._checks import check_generator, check_positive_int
from sem_fast.config import SEMConfig
from sem_fast.draws import AugmentDraw, MixDraw
from sem_fast.ops.registry import available_backends

# Marsaglia-Tsang accepts a candidate with probability > 0.95 for shape >= 1 (we always sample
# shape alpha + 1, see `_log_gamma`), so 8 candidates leave a chance below 0.05**8 ~ 4e-11 that
# all are rejected; the sampler then returns the last candidate's value, still a valid positive
# number. Fixed-size vectorized draws keep the sampler free of data-dependent loops (no sync).
_GAMMA_CANDIDATES = 8


def draw_sampler(cfg: SEMConfig, device: torch.device | str) -> str:
    """``'triton'`` when the draws for ``cfg`` on ``device`` come from the Triton kernel, else ``'torch'``."""
    device_type = torch.device(device).type
    if cfg.backend == "reference" or device_type not in ("cuda", "cpu"):
        return "torch"
    if device_type == "cpu" and cfg.backend != "triton":
        return "torch"
    return "triton" if _triton_runs(device_type) else "torch"


@functools.cache
def _triton_runs(device_type: str) -> bool:
    return available_backends(device_type)["triton"] is None


def sample_augment(
    batch_size: int,
    cfg: SEMConfig,
    *,
    device: torch.device | str,
    generator: torch.Generator | None = None,
) -> AugmentDraw:
    """Sample an `AugmentDraw` on ``device`` without host sync: offsets uniform in
    ``[0, 2 * cfg.crop_padding]`` and flips with probability 1/2 when ``cfg.hflip``."""
    return _sample(batch_size, 1, 1, cfg, device, generator, draw=False, augment=True)[1]


def sample_draw(
    batch_size: int,
    height: int,
    width: int,
    cfg: SEMConfig,
    *,
    device: torch.device | str,
    generator: torch.Generator | None = None,
) -> MixDraw:
    """Sample a `MixDraw` for a ``(B, C, height, width)`` batch on ``device``, without host sync.

    lambda ~ Beta(alpha, alpha) (``cfg.cutmix_alpha`` for CutMix samples), one per batch or one
    per sample (``cfg.lam_mode``). CutMix boxes follow the CutMix paper: cut ratio
    ``sqrt(1 - lam)``, ``cut_h = int(H * ratio)``, ``cut_w = int(W * ratio)``, centre uniform
    over the image, box clipped to the image, then (``cfg.correct_lam``) lambda set to
    ``1 - clipped area / (H * W)``. A batch or sample left unmixed (``cfg.mix == 'none'`` or the
    ``cfg.mix_prob`` coin) has ``lam = 1``, an empty box and ``is_cutmix = False``.
    ``generator``: a generator on ``device`` (None: torch's default one); see `draw_sampler`.
    """
    return _sample(batch_size, height, width, cfg, device, generator, draw=True, augment=False)[0]


def sample_step_draws(
    batch_size: int,
    height: int,
    width: int,
    cfg: SEMConfig,
    *,
    device: torch.device | str,
    generator: torch.Generator | None = None,
) -> tuple[MixDraw, AugmentDraw | None]:
    """The draws of one step: `sample_draw`'s `MixDraw` and, when ``cfg.augments``,
    `sample_augment`'s `AugmentDraw` (else None), in one kernel launch on the ``'triton'``
    sampler; the torch sampler calls `sample_draw` then `sample_augment`."""
    return _sample(batch_size, height, width, cfg, device, generator, draw=True, augment=cfg.augments)


def _sample(
    batch_size: int,
    height: int,
    width: int,
    cfg: SEMConfig,
    device: torch.device | str,
    generator: torch.Generator | None,
    *,
    draw: bool,
    augment: bool,
) -> tuple[MixDraw | None, AugmentDraw | None]:
    """Check the arguments, then ``(MixDraw if draw, AugmentDraw if augment)`` from the sampler
    `draw_sampler` picks (the torch sampler draws the `MixDraw` first)."""
    check_positive_int("batch_size", batch_size)
    check_positive_int("height", height)
    check_positive_int("width", width)
    if not isinstance(cfg, SEMConfig):
        raise TypeError(f"cfg must be a SEMConfig, got {type(cfg).__name__}")
    device = torch.device(device)
    check_generator(generator, device)
    if draw_sampler(cfg, device) == "triton":
        return _kernel().sample_step_draws(
            batch_size, height, width, cfg, device=device, generator=generator, draw=draw, augment=augment
        )
    return (
        _torch_draw(batch_size, height, width, cfg, device, generator) if draw else None,
        _torch_augment(batch_size, cfg, device, generator) if augment else None,
    )


def _kernel():
    """The Triton sampler module (imports Triton, so only when the kernel path is taken)."""
    from sem_fast.ops.triton import sampling

    return sampling


def _torch_augment(
    batch_size: int, cfg: SEMConfig, device: torch.device, generator: torch.Generator | None
) -> AugmentDraw:
    p = cfg.crop_padding
    offset = torch.randint(0, 2 * p + 1, (batch_size, 2), device=device, generator=generator)
    if cfg.hflip:
        flip = _coin(batch_size, 0.5, device, generator)
    else:
        flip = torch.zeros(batch_size, dtype=torch.bool, device=device)
    return AugmentDraw(offset=offset.to(torch.int32), flip=flip)


def _torch_draw(
    batch_size: int, height: int, width: int, cfg: SEMConfig, device: torch.device, generator: torch.Generator | None
) -> MixDraw:
    B = batch_size
    if not cfg.mixes:
        return MixDraw(
            perm=torch.arange(B, device=device),
            lam=torch.ones(B, device=device),
            box=torch.zeros(B, 4, dtype=torch.int32, device=device),
            is_cutmix=torch.zeros(B, dtype=torch.bool, device=device),
        )

    if cfg.pairing == "perm":
        perm = torch.randperm(B, device=device, generator=generator)
    else:
        perm = torch.arange(B - 1, -1, -1, device=device)

    n = B if cfg.lam_mode == "elem" else 1
    alphas = torch.full((2, n), cfg.alpha, device=device)  # filled on the device: no host copy
    alphas[1].fill_(cfg.cutmix_alpha)
    lam_mixup, lam_cutmix = _beta_symmetric(alphas.view(-1), generator).view(2, n)

    if cfg.mix == "switch":
        is_cutmix = _coin(n, cfg.switch_prob, device, generator)
    else:
        is_cutmix = torch.full((n,), cfg.mix == "cutmix", device=device)
    mixed = _coin(n, cfg.mix_prob, device, generator)

    box, lam_box = _cutmix_box(lam_cutmix, height, width, generator)
    lam_cutmix = lam_box if cfg.correct_lam else lam_cutmix
    lam = torch.where(is_cutmix, lam_cutmix, lam_mixup)
    lam = torch.where(mixed, lam, torch.ones_like(lam))
    is_cutmix = is_cutmix & mixed
    box = torch.where(is_cutmix[:, None], box, torch.zeros_like(box))
    return MixDraw(
        perm=perm,
        lam=lam.expand(B).contiguous(),
        box=box.expand(B, 4).contiguous(),
        is_cutmix=is_cutmix.expand(B).contiguous(),
    )


def _coin(n: int, p: float, device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
    """``(n,) bool``: independent draws that are True with probability ``p``."""
    return torch.rand(n, device=device, generator=generator) < p


def _cutmix_box(
    lam: torch.Tensor, height: int, width: int, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes for ratios ``lam (n,) fp32`` -> ``(box (n, 4) int32, area-corrected lam (n,) fp32)``."""
    n, device = lam.shape[0], lam.device
    ratio = torch.sqrt(1.0 - lam)
    cut_h = (height * ratio).to(torch.int64)  # int(H * ratio): truncation toward zero
    cut_w = (width * ratio).to(torch.int64)
    cy = torch.randint(0, height, (n,), device=device, generator=generator)
    cx = torch.randint(0, width, (n,), device=device, generator=generator)
    y0 = (cy - cut_h // 2).clamp(0, height)
    y1 = (cy + cut_h // 2).clamp(0, height)
    x0 = (cx - cut_w // 2).clamp(0, width)
    x1 = (cx + cut_w // 2).clamp(0, width)
    box = torch.stack([y0, y1, x0, x1], dim=1).to(torch.int32)
    return box, box_lambda(box, height, width)


def box_lambda(box: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Fraction of pixels a sample keeps when ``box (n, 4) int`` of its partner is pasted in.

    ``1 - (y1 - y0) * (x1 - x0) / (height * width)`` as ``(n,) float32``.
    """
    area = (box[:, 1] - box[:, 0]) * (box[:, 3] - box[:, 2])
    return 1.0 - area.to(torch.float32) / float(height * width)


def _beta_symmetric(alpha: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One Beta(alpha, alpha) sample per entry of ``alpha (n,) fp32``, as ``(n,) fp32``.

    ``X / (X + Y)`` with ``X, Y ~ Gamma(alpha)`` computed as ``sigmoid(log X - log Y)``, so
    small alphas whose gamma samples underflow float32 still give exact 0/1 limits, not NaN.
    """
    log_xy = _log_gamma(alpha.repeat(2), generator).view(2, -1)
    return torch.sigmoid(log_xy[0] - log_xy[1])


def _log_gamma(shape: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """``log`` of one Gamma(shape, 1) sample per entry of ``shape (n,) fp32`` (all > 0).

    Marsaglia & Tsang (2000) on ``shape + 1`` and the boost ``Gamma(a) = Gamma(a + 1) *
    U**(1/a)``, with a fixed number of vectorized candidates instead of a rejection loop.
    """
    n, device = shape.shape[0], shape.device
    d = shape + (1.0 - 1.0 / 3.0)  # (shape + 1) - 1/3
    c = torch.rsqrt(9.0 * d)
    x = torch.randn(_GAMMA_CANDIDATES, n, device=device, generator=generator)
    u = torch.rand(_GAMMA_CANDIDATES, n, device=device, generator=generator)
    v = (1.0 + c * x) ** 3
    log_v = torch.log(v.clamp_min(torch.finfo(torch.float32).tiny))
    accept = (v > 0) & (torch.log(u) < 0.5 * x * x + d - d * v + d * log_v)
    # First accepted candidate; argmax of a bool row is its first True (or 0 when none is).
    pick = torch.where(accept.any(0), accept.to(torch.uint8).argmax(0), _GAMMA_CANDIDATES - 1)
    log_g1 = torch.log(d) + log_v.gather(0, pick[None]).squeeze(0)
    u_boost = torch.rand(n, device=device, generator=generator).clamp_min(torch.finfo(torch.float32).tiny)
    return log_g1 + torch.log(u_boost) / shape
