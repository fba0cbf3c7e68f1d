"""Argument checks shared by the public API and every backend.

Each check raises ``TypeError`` (wrong type or dtype) or ``ValueError`` (wrong shape, device or
value) naming the argument and what was expected, before any kernel touches memory.

Checks of *values* (labels in ``[0, K)``, ``perm`` a permutation, ``lam`` in ``[0, 1]``, boxes
inside the image, crop offsets in range) read tensor contents, which on CUDA is a host sync. They
run in eager mode unless the caller passes ``check_values=False`` (a training loop with zero host
syncs per step), and are skipped while ``torch.compile`` traces or a CUDA graph captures; every
backend then stays memory-safe on bad values (each gather is masked) and the loss comes out NaN
instead of silently wrong (`sem_fast.reference` lists what each bad value gives). Checks of
metadata (type, dtype, shape, device) always run: they read no tensor values.
"""

from __future__ import annotations

import torch

from sem_fast.config import SEMConfig
from sem_fast.draws import AugmentDraw, MixDraw

#: Float dtypes of images and features the fast kernels take.
KERNEL_FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
#: ... and what the public functions accept: float64 too, which 'auto' sends to the reference.
FLOAT_DTYPES = (*KERNEL_FLOAT_DTYPES, torch.float64)


def _dtype_names(dtypes: tuple[torch.dtype, ...]) -> str:
    return "/".join(str(d).removeprefix("torch.") for d in dtypes)


def values_inspectable(t: torch.Tensor, check_values: bool = True) -> bool:
    """Whether to read ``t``'s values now: the caller asks for it (``check_values``) and it is
    allowed (eager mode, not capturing a CUDA graph)."""
    if not check_values or torch.compiler.is_compiling():
        return False
    return not (t.is_cuda and torch.cuda.is_current_stream_capturing())


def check_positive_int(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def check_tensor(name: str, t: object) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    return t


def check_same_device(name: str, t: torch.Tensor, device: torch.device, ref_name: str) -> None:
    if t.device != device:
        raise ValueError(f"{name} is on {t.device} but {ref_name} is on {device}; move both to one device")


def check_generator(generator: torch.Generator | None, device: torch.device) -> None:
    if generator is None:
        return
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if generator.device.type != device.type:
        raise ValueError(
            f"generator is a {generator.device.type} generator but device is {device}; "
            f"create it with torch.Generator(device={str(device)!r})"
        )


def check_images(images: object, float_dtypes: tuple[torch.dtype, ...] = FLOAT_DTYPES) -> tuple[int, int, int, int]:
    """Check a batch of images and return ``(B, C, H, W)``.

    Accepted: ``(B, H, W, C) uint8`` (as loaders produce it) or ``(B, C, H, W)`` in one of
    ``float_dtypes`` (float32 / bfloat16 / float16 / float64), already normalized, in any memory
    format.
    """
    x = check_tensor("images", images)
    if x.dim() != 4:
        raise ValueError(f"images must be 4-D, (B, H, W, C) uint8 or (B, C, H, W) float; got shape {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        B, H, W, C = x.shape
    elif x.dtype in float_dtypes:
        B, C, H, W = x.shape
    else:
        raise TypeError(f"images must be uint8 (B, H, W, C) or {_dtype_names(float_dtypes)} (B, C, H, W), got {x.dtype}")
    if min(B, C, H, W) == 0:
        raise ValueError(f"images must be non-empty in every dimension, got shape {tuple(x.shape)}")
    return B, C, H, W


def check_labels(
    labels: object, batch_size: int, device: torch.device, num_classes: int | None, check_values: bool = True
) -> None:
    """``labels (B,) int64|int32`` on ``device``; in ``[0, num_classes)`` when ``num_classes`` is
    known and values are inspectable (`values_inspectable`)."""
    y = check_tensor("labels", labels)
    if y.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"labels must be int64 or int32 class indices, got {y.dtype}")
    if y.shape != (batch_size,):
        raise ValueError(f"labels must have shape ({batch_size},) to match the batch, got {tuple(y.shape)}")
    check_same_device("labels", y, device, "images")
    if num_classes is not None and values_inspectable(y, check_values):
        lo, hi = (int(v) for v in y.aminmax())
        if lo < 0 or hi >= num_classes:
            bad = lo if lo < 0 else hi
            raise ValueError(f"labels must lie in [0, {num_classes}) (the number of logits), found {bad}")


#: Per-sample trailing shape and dtype of every field of a `MixDraw` and an `AugmentDraw`.
_FIELDS: dict[str, tuple[tuple[int, ...], torch.dtype]] = {
    "perm": ((), torch.int64),
    "lam": ((), torch.float32),
    "box": ((4,), torch.int32),
    "is_cutmix": ((), torch.bool),
    "offset": ((2,), torch.int32),
    "flip": ((), torch.bool),
}


def check_fields(owner: str, fields: dict[str, object], batch_size: int, device: torch.device) -> None:
    """Type, dtype, shape ``(batch_size, ...)`` and device of draw fields, e.g. ``{"perm": t}``
    of ``owner`` ``'draw'``; reads no values (no sync), so the ops can run it on every call."""
    for field, value in fields.items():
        tail, dtype = _FIELDS[field]
        shape = (batch_size, *tail)
        t = check_tensor(f"{owner}.{field}", value)
        if t.dtype != dtype:
            raise TypeError(f"{owner}.{field} must be {dtype}, got {t.dtype}")
        if tuple(t.shape) != shape:
            raise ValueError(f"{owner}.{field} must have shape {shape} for a batch of {batch_size}, got {tuple(t.shape)}")
        check_same_device(f"{owner}.{field}", t, device, "the data")


def check_draw(
    draw: object,
    batch_size: int,
    device: torch.device,
    image_size: tuple[int, int] | None = None,
    check_values: bool = True,
) -> None:
    """A `MixDraw` for ``batch_size`` samples on ``device``; when values are inspectable
    (`values_inspectable`), ``perm`` a permutation, ``lam`` in ``[0, 1]`` and boxes inside
    ``image_size = (H, W)``.

    The loss, which never sees the images, passes no ``image_size``: boxes are then only
    checked to be well-formed.
    """
    if not isinstance(draw, MixDraw):
        raise TypeError(f"draw must be a MixDraw, got {type(draw).__name__}")
    check_fields("draw", draw._asdict(), batch_size, device)
    if not values_inspectable(draw.perm, check_values):
        return
    if not torch.equal(torch.sort(draw.perm).values, torch.arange(batch_size, device=device)):
        raise ValueError(f"draw.perm must be a permutation of 0..{batch_size - 1}")
    if not bool(((draw.lam >= 0) & (draw.lam <= 1)).all()):
        raise ValueError("draw.lam must lie in [0, 1]")
    height, width = image_size or (torch.iinfo(torch.int32).max,) * 2
    y0, y1, x0, x1 = draw.box.unbind(1)
    inside = (y0 >= 0) & (y0 <= y1) & (y1 <= height) & (x0 >= 0) & (x0 <= x1) & (x1 <= width)
    if not bool(inside.all()):
        b = int((~inside).nonzero()[0, 0])
        bounds = f" <= {height}" if image_size else "", f" <= {width}" if image_size else ""
        raise ValueError(
            f"draw.box[{b}] = {draw.box[b].tolist()} is not a half-open (y0, y1, x0, x1) box with "
            f"0 <= y0 <= y1{bounds[0]} and 0 <= x0 <= x1{bounds[1]}"
        )
    if bool((draw.box[~draw.is_cutmix] != 0).any()):
        raise ValueError("draw.box must be all zeros for samples with draw.is_cutmix False")


def check_features(
    logits: object,
    z_mix: object,
    z_clean: object | None,
    batch_size: int,
    device: torch.device,
    float_dtypes: tuple[torch.dtype, ...] = FLOAT_DTYPES,
) -> int:
    """``logits (B, K)``, ``z_mix (B, D)`` and ``z_clean (B, D)`` (or None) in ``float_dtypes``;
    returns K."""
    for name, t in (("logits", logits), ("z_mix", z_mix), ("z_clean", z_clean)):
        if t is None and name == "z_clean":
            continue
        t = check_tensor(name, t)
        if t.dtype not in float_dtypes:
            raise TypeError(f"{name} must be {_dtype_names(float_dtypes)}, got {t.dtype}")
        if t.dim() != 2 or t.shape[0] != batch_size or t.shape[1] == 0:
            raise ValueError(f"{name} must have shape ({batch_size}, N) with N >= 1, got {tuple(t.shape)}")
        check_same_device(name, t, device, "labels")
    if z_clean is not None and z_clean.shape != z_mix.shape:
        raise ValueError(f"z_clean must have the shape of z_mix {tuple(z_mix.shape)}, got {tuple(z_clean.shape)}")
    return logits.shape[1]


def check_augment(
    augment: object,
    batch_size: int,
    device: torch.device,
    image_size: tuple[int, int],
    cfg: SEMConfig,
    check_values: bool = True,
) -> None:
    """An `AugmentDraw` for ``batch_size`` samples on ``device``, offsets within
    ``2 * cfg.crop_padding`` when values are inspectable (`values_inspectable`)."""
    if not isinstance(augment, AugmentDraw):
        raise TypeError(f"augment must be an AugmentDraw or None, got {type(augment).__name__}")
    check_fields("augment", augment._asdict(), batch_size, device)
    check_padding(cfg, image_size)
    p = cfg.crop_padding
    in_range = (augment.offset >= 0) & (augment.offset <= 2 * p)
    if values_inspectable(augment.offset, check_values) and not bool(in_range.all()):
        raise ValueError(f"augment.offset must lie in [0, 2 * cfg.crop_padding] = [0, {2 * p}]")


def check_padding(cfg: SEMConfig, image_size: tuple[int, int]) -> None:
    """Reflect padding needs ``cfg.crop_padding`` smaller than both image sides."""
    if cfg.padding_mode == "reflect" and cfg.crop_padding >= min(image_size):
        raise ValueError(
            f"SEMConfig.crop_padding={cfg.crop_padding} with padding_mode='reflect' must be smaller "
            f"than the image size {image_size}"
        )


def check_mix_args(
    images: object, draw: object, cfg: SEMConfig, augment: object | None = None, check_values: bool = True
) -> tuple[int, int, int, int]:
    """All arguments of a ``mix_images`` op (values only if ``check_values``); returns ``(B, C, H, W)``."""
    if not isinstance(cfg, SEMConfig):
        raise TypeError(f"cfg must be a SEMConfig, got {type(cfg).__name__}")
    B, C, H, W = check_images(images)
    check_channels(images, cfg)
    check_draw(draw, B, images.device, (H, W), check_values)
    if augment is not None:
        check_augment(augment, B, images.device, (H, W), cfg, check_values)
    return B, C, H, W


def check_channels(images: torch.Tensor, cfg: SEMConfig) -> None:
    """uint8 images need one ``cfg.mean``/``cfg.std`` value per channel."""
    if images.dtype == torch.uint8 and images.shape[-1] != len(cfg.mean):
        raise ValueError(
            f"images have {images.shape[-1]} channels but cfg.mean/cfg.std have {len(cfg.mean)} "
            "values; pass mean/std with one value per channel"
        )


def check_loss_args(
    logits: object,
    z_mix: object,
    z_clean: object | None,
    labels: object,
    draw: object,
    cfg: SEMConfig,
    check_values: bool = True,
) -> None:
    """All arguments of a ``sem_loss`` op (values only if ``check_values``)."""
    if not isinstance(cfg, SEMConfig):
        raise TypeError(f"cfg must be a SEMConfig, got {type(cfg).__name__}")
    y = check_tensor("labels", labels)
    if y.dim() != 1 or y.shape[0] == 0:
        raise ValueError(f"labels must have shape (B,) with B >= 1, got {tuple(y.shape)}")
    K = check_features(logits, z_mix, z_clean, y.shape[0], y.device)
    check_labels(y, y.shape[0], y.device, K, check_values)
    check_draw(draw, y.shape[0], y.device, check_values=check_values)
