"""`SEMConfig`: every choice of a SEM training step, validated once on construction.

The paper (Han et al., "Semantic Equivariant Mixup", 2023) fixes the form of the loss but its
copy lost the hyper-parameter values; each field marked *ours* below is our default where the
paper is silent (see README, "Defaults that are ours").
"""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass, fields
from typing import Any, Literal

import torch

from sem_fast.timm_compat import FIELDS_SET_BY_TIMM, TIMM_MIXUP_DEFAULTS, timm_mixup_fields

#: CIFAR-10 per-channel mean and standard deviation of the training set, in 0..1 units.
CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)

MixMode = Literal["mixup", "cutmix", "switch", "none"]
LamMode = Literal["batch", "elem"]
Pairing = Literal["perm", "flip"]
SemReduction = Literal["mean", "sum"]
BackendName = Literal["auto", "triton", "native", "reference"]
PaddingMode = Literal["zeros", "reflect"]

#: The op backends (`sem_fast.ops.registry`); ``'cuda'`` is accepted as a deprecated alias of ``'native'``.
BACKEND_CHOICES: tuple[str, ...] = ("auto", "triton", "native", "reference")

_CHOICES: dict[str, tuple[str, ...]] = {
    "mix": ("mixup", "cutmix", "switch", "none"),
    "lam_mode": ("batch", "elem"),
    "pairing": ("perm", "flip"),
    "sem_reduction": ("mean", "sum"),
    "backend": BACKEND_CHOICES,
    "padding_mode": ("zeros", "reflect"),
}
_OUT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

#: Deprecated backend names -> their current names, accepted with a warning for one release.
DEPRECATED_BACKENDS: dict[str, str] = {"cuda": "native"}


def canonical_backend(name: str) -> str:
    """``name``, or the current name of a deprecated backend name (with a ``DeprecationWarning``)."""
    if isinstance(name, str) and name in DEPRECATED_BACKENDS:
        new = DEPRECATED_BACKENDS[name]
        warnings.warn(
            f"backend={name!r} is deprecated and will be removed: it named the compiled kernels, which run C++ "
            f"on CPUs and CUDA on GPUs; use backend={new!r}",
            DeprecationWarning,
            stacklevel=3,
        )
        return new
    return name


@dataclass(frozen=True)
class SEMConfig:
    """Configuration of one SEM step: how to mix, how to weigh the SEM term, which backend runs it.

    Attributes:
        mix: ``'mixup'`` (pixel lerp), ``'cutmix'`` (box paste), ``'switch'`` (CutMix with
            probability ``switch_prob``, else mixup) or ``'none'`` (no mixing: ERM, or the
            "early stop" phase; the SEM term and the clean pass are then skipped).
        alpha: Beta(alpha, alpha) parameter of the mixup ratio, > 0 (*ours*: 1.0).
        cutmix_alpha: Beta parameter of the CutMix ratio, > 0 (1.0 as in the CutMix paper).
        switch_prob: chance of CutMix rather than mixup under ``mix='switch'``, in [0, 1].
        mix_prob: chance that a batch (``lam_mode='batch'``) or a sample (``'elem'``) is mixed.
        lam_mode: one lambda for the whole batch (``'batch'``) or one per sample (``'elem'``).
        pairing: partner of sample ``b``: a random permutation (``'perm'``) or the reversed
            batch ``B-1-b`` (``'flip'``, as timm does).
        correct_lam: after clipping a CutMix box to the image, set lambda to the exact fraction
            of pixels kept from the sample itself, ``1 - box area / (H*W)``.
        gamma: weight of the SEM term, >= 0; 0 gives plain mixup/CutMix (*ours*: 1.0).
        sem_reduction: ``'mean'``: mean of ``(z_mix - t)**2`` over batch and features;
            ``'sum'``: squared L2 norm per sample, averaged over the batch (*ours*: 'mean').
        detach_target: stop the gradient through the target ``lam*z_i + (1-lam)*z_j`` (the
            clean pass then runs under ``no_grad``) (*ours*: True).
        label_smoothing: label smoothing of both cross-entropy terms, in [0, 1).
        mean, std: per-channel normalization in 0..1 units, applied to uint8 input.
        out_dtype: dtype of the normalized/mixed images: fp32, bf16, fp16, or ``None`` (the
            autocast dtype when autocast is on for the images' device, else fp32 for uint8
            input and the input's dtype for float input).
        channels_last: return the images in ``torch.channels_last`` memory format.
        backend: ``'reference'`` (plain PyTorch, any device), ``'triton'`` (Triton kernels),
            ``'native'`` (the compiled kernels of csrc/: C++ on CPUs, CUDA on GPUs) or ``'auto'``
            (per op, the fastest backend that runs on the device and takes the input; see
            `sem_fast.ops.registry`). ``'cuda'`` is a deprecated alias of ``'native'``.
        crop_padding: random-crop augmentation of the clean images before mixing: pad every
            side by this many pixels and crop back to ``H x W`` at a random offset (0 = off;
            4 is the usual CIFAR setting).
        padding_mode: ``'zeros'`` (pad with 0 in the input's own units: black for uint8) or
            ``'reflect'`` (mirror without repeating the edge, as ``F.pad(mode='reflect')``).
        hflip: random horizontal flip (probability 1/2) of the clean images before mixing.
    """

    mix: MixMode = "mixup"
    alpha: float = 1.0
    cutmix_alpha: float = 1.0
    switch_prob: float = 0.5
    mix_prob: float = 1.0
    lam_mode: LamMode = "batch"
    pairing: Pairing = "perm"
    correct_lam: bool = True
    gamma: float = 1.0
    sem_reduction: SemReduction = "mean"
    detach_target: bool = True
    label_smoothing: float = 0.0
    mean: tuple[float, ...] = CIFAR10_MEAN
    std: tuple[float, ...] = CIFAR10_STD
    out_dtype: torch.dtype | None = None
    channels_last: bool = True
    backend: BackendName = "auto"
    crop_padding: int = 0
    padding_mode: PaddingMode = "zeros"
    hflip: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "backend", canonical_backend(self.backend))
        for name, allowed in _CHOICES.items():
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"SEMConfig.{name} must be one of {allowed}, got {value!r}")
        for name in ("correct_lam", "detach_target", "channels_last", "hflip"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"SEMConfig.{name} must be a bool, got {getattr(self, name)!r}")
        # Numbers of any kind (numpy scalars too) are stored as Python floats / ints.
        _set_number(self, "alpha", low=0.0, low_open=True)
        _set_number(self, "cutmix_alpha", low=0.0, low_open=True)
        _set_number(self, "switch_prob", low=0.0, high=1.0)
        _set_number(self, "mix_prob", low=0.0, high=1.0)
        _set_number(self, "gamma", low=0.0)
        _set_number(self, "label_smoothing", low=0.0, high=1.0, high_open=True)
        padding = self.crop_padding
        if not isinstance(padding, numbers.Integral) or isinstance(padding, bool) or padding < 0:
            raise ValueError(f"SEMConfig.crop_padding must be an int >= 0, got {padding!r}")
        object.__setattr__(self, "crop_padding", int(padding))
        # Tuples so that the frozen config stays hashable (torch.compile guards on it).
        object.__setattr__(self, "mean", _channel_tuple("mean", self.mean, positive=False))
        object.__setattr__(self, "std", _channel_tuple("std", self.std, positive=True))
        if len(self.mean) != len(self.std):
            raise ValueError(
                f"SEMConfig.mean and SEMConfig.std must have one value per channel, got "
                f"{len(self.mean)} and {len(self.std)} values"
            )
        if self.out_dtype is not None and self.out_dtype not in _OUT_DTYPES:
            raise ValueError(
                f"SEMConfig.out_dtype must be None or one of {_OUT_DTYPES}, got {self.out_dtype!r}"
            )

    @property
    def mixes(self) -> bool:
        """Whether any sample can be mixed (``mix != 'none'`` and ``mix_prob > 0``)."""
        return self.mix != "none" and self.mix_prob > 0.0

    @property
    def augments(self) -> bool:
        """Whether the clean images are augmented (random crop and/or flip) before mixing."""
        return self.crop_padding > 0 or self.hflip

    @property
    def uses_clean_pass(self) -> bool:
        """Whether the step needs the clean forward pass: mixing is on and ``gamma > 0``."""
        return self.mixes and self.gamma > 0.0

    def resolve_out_dtype(self, images: torch.Tensor) -> torch.dtype:
        """The dtype of the normalized/mixed images made from ``images`` (see ``out_dtype``)."""
        if self.out_dtype is not None:
            return self.out_dtype
        device_type = images.device.type  # 'meta' has no autocast state
        if torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type):
            return torch.get_autocast_dtype(device_type)
        return torch.float32 if images.dtype == torch.uint8 else images.dtype

    @classmethod
    def from_timm(cls, **kwargs: Any) -> SEMConfig:
        """The config that draws and mixes as ``timm.data.Mixup(**timm_args)`` does, for a timm user's
        arguments (each mapped or refused by name: `sem_fast.timm_compat`; those not given take
        timm's defaults) plus any other SEMConfig field (``gamma``, ``backend``, ``pairing``, ...).

            SEMConfig.from_timm(mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5, mode="batch",
                                label_smoothing=0.1, num_classes=1000, gamma=0.5)

        `sem_fast.soft_targets` then gives the soft labels timm's ``Mixup`` returns for a draw.
        """
        timm_args = {k: v for k, v in kwargs.items() if k in TIMM_MIXUP_DEFAULTS}
        own = {k: v for k, v in kwargs.items() if k not in TIMM_MIXUP_DEFAULTS}
        decided = sorted(set(own) & set(FIELDS_SET_BY_TIMM))
        if decided:
            raise TypeError(
                f"SEMConfig.from_timm: {decided} are decided by timm's arguments (mixup_alpha, cutmix_alpha, prob, "
                "mode): pass those, or build SEMConfig(...) directly"
            )
        unknown = sorted(set(own) - {f.name for f in fields(cls)})
        if unknown:
            raise TypeError(f"SEMConfig.from_timm: {unknown} are neither timm Mixup arguments nor SEMConfig fields")
        return cls(**{**timm_mixup_fields(**timm_args), **own})

    def replace(self, **changes: object) -> SEMConfig:
        """A copy with ``changes`` applied (and validated), like `dataclasses.replace`."""
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise ValueError(f"SEMConfig has no field(s) {sorted(unknown)}")
        return SEMConfig(**{**{f.name: getattr(self, f.name) for f in fields(self)}, **changes})


def _set_number(
    cfg: SEMConfig,
    name: str,
    *,
    low: float,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Check that field ``name`` is a finite real number (not a bool; numpy scalars count) in the
    range, and store it as a Python float."""
    value = getattr(cfg, name)
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (
            value < high if high_open else value <= high
        )
    if not ok:
        lo = f"({low}" if low_open else f"[{low}"
        hi = "inf)" if high == math.inf else (f"{high})" if high_open else f"{high}]")
        raise ValueError(f"SEMConfig.{name} must be a finite number in {lo}, {hi}, got {value!r}")
    object.__setattr__(cfg, name, float(value))


def _channel_tuple(name: str, value: object, *, positive: bool) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ValueError(f"SEMConfig.{name} must be a sequence of numbers, got {value!r}") from None
    if not out or not all(math.isfinite(v) and (v > 0 or not positive) for v in out):
        need = "positive finite numbers" if positive else "finite numbers"
        raise ValueError(f"SEMConfig.{name} must be a non-empty sequence of {need}, got {value!r}")
    return out
