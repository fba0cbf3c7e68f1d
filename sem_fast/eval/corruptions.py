"""CIFAR-10-C corruptions computed on the fly, in torch, on the images' device.

Eight of the 15 corruptions of Hendrycks & Dietterich (2019), with the severity constants of
their CIFAR script (``make_cifar_c.py`` in hendrycks/robustness), so robustness is measurable
without the 2.9 GB CIFAR-10-C files:

- noise: ``gaussian_noise``, ``shot_noise``, ``impulse_noise``;
- blur: ``defocus_blur``, ``zoom_blur``;
- digital: ``brightness``, ``contrast``, ``pixelate``.

Left out: ``glass_blur`` (a per-pixel sequential swap loop), ``motion_blur`` and ``snow``
(ImageMagick's motion blur), ``frost`` (photographs of frost), ``fog`` (a diamond-square
fractal), ``elastic_transform`` and ``jpeg_compression`` (OpenCV / libjpeg). Each function
follows the published one up to float rounding (the originals run in float64 with numpy,
scipy, OpenCV or Pillow); the noise draws come from a `torch.Generator`, so they differ from
the published files sample by sample but not in distribution. As in the published files the
result is cast back to uint8 by truncation.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

CORRUPTIONS = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "zoom_blur", "brightness", "contrast", "pixelate",
)  # fmt: skip
SEVERITIES = (1, 2, 3, 4, 5)

# Severity constants of make_cifar_c.py, severity 1..5.
_GAUSSIAN_SCALE = (0.04, 0.06, 0.08, 0.09, 0.10)
_SHOT_RATE = (500, 250, 100, 75, 50)
_IMPULSE_AMOUNT = (0.01, 0.02, 0.03, 0.05, 0.07)
_DEFOCUS = ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1.0, 0.2), (1.5, 0.1))  # (disk radius, alias-blur sigma)
_ZOOM_STOP = (1.06, 1.11, 1.16, 1.21, 1.26)  # zoom factors np.arange(1, stop, 0.01)
_BRIGHTNESS = (0.05, 0.1, 0.15, 0.2, 0.3)
_CONTRAST = (0.75, 0.5, 0.4, 0.3, 0.15)
_PIXELATE = (0.95, 0.9, 0.85, 0.75, 0.65)
_DISK_HALF = 8  # make_cifar_c.disk: a 17x17 support for radii <= 8


def corrupt(images: torch.Tensor, name: str, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Corrupt ``images (B, H, W, C) uint8`` with corruption ``name`` at ``severity`` 1..5.

    Returns a new ``(B, H, W, C) uint8`` tensor on the same device. ``generator`` (on that
    device) drives the noise corruptions.
    """
    if name not in CORRUPTIONS:
        raise ValueError(f"corruption must be one of {CORRUPTIONS}, got {name!r}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, got {severity!r}")
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError("images must be a (B, H, W, C) uint8 tensor")
    if name == "pixelate":
        return _pixelate(images, _PIXELATE[severity - 1])
    x = images.permute(0, 3, 1, 2).float() / 255.0
    out = _FLOAT_CORRUPTIONS[name](x, severity - 1, generator)
    return (out.clamp(0.0, 1.0) * 255.0).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def _gaussian_noise(x: torch.Tensor, s: int, g: torch.Generator | None) -> torch.Tensor:
    return x + _GAUSSIAN_SCALE[s] * torch.randn(x.shape, device=x.device, generator=g)


def _shot_noise(x: torch.Tensor, s: int, g: torch.Generator | None) -> torch.Tensor:
    rate = _SHOT_RATE[s]
    return torch.poisson(x * rate, generator=g) / rate


def _impulse_noise(x: torch.Tensor, s: int, g: torch.Generator | None) -> torch.Tensor:
    """skimage's ``random_noise(mode='s&p')``: each value flipped with probability ``amount``,
    to 1 or 0 with equal odds."""
    flipped = torch.rand(x.shape, device=x.device, generator=g) <= _IMPULSE_AMOUNT[s]
    salt = torch.rand(x.shape, device=x.device, generator=g) <= 0.5
    return torch.where(flipped, salt.to(x.dtype), x)


def _defocus_blur(x: torch.Tensor, s: int, g: torch.Generator | None) -> torch.Tensor:
    radius, alias_sigma = _DEFOCUS[s]
    kernel = _disk_kernel(radius, alias_sigma, x.device)
    return _filter2d(x, kernel)


def _disk_kernel(radius: float, alias_sigma: float, device: torch.device) -> torch.Tensor:
    """make_cifar_c.disk: a normalized aliased disk on a 17x17 grid, then OpenCV's 3x3 Gaussian
    blur (border reflect-101) with ``alias_sigma``; ``(17, 17) float32``."""
    grid = torch.arange(-_DISK_HALF, _DISK_HALF + 1, dtype=torch.float64)
    disk = ((grid[:, None] ** 2 + grid[None, :] ** 2) <= radius**2).double()
    disk /= disk.sum()
    taps = torch.exp(-(torch.arange(-1, 2, dtype=torch.float64) ** 2) / (2.0 * alias_sigma**2))
    taps /= taps.sum()
    padded = F.pad(disk[None, None], (1, 1, 1, 1), mode="reflect")
    blurred = F.conv2d(padded, (taps[:, None] * taps[None, :])[None, None])
    return blurred[0, 0].float().to(device)


def _filter2d(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """OpenCV ``filter2D`` per channel (a correlation) with its default reflect-101 border."""
    C, k = x.shape[1], kernel.shape[0] // 2
    padded = F.pad(x, (k, k, k, k), mode="reflect")
    return F.conv2d(padded, kernel.expand(C, 1, -1, -1), groups=C)


def _zoom_blur(x: torch.Tensor, s: int, g: torch.Generator | None) -> torch.Tensor:
    # np.arange is used as is: its float steps decide how many zooms a severity averages
    # (severity 2 has twelve, 1.00 ... 1.11).
    zooms = np.arange(1, _ZOOM_STOP[s], 0.01)
    out = torch.zeros_like(x)
    for zoom in zooms:
        out += _clipped_zoom(x, float(zoom))
    return (x + out) / (len(zooms) + 1)


def _clipped_zoom(x: torch.Tensor, zoom: float) -> torch.Tensor:
    """make_cifar_c.clipped_zoom: enlarge the central ``ceil(H / zoom)`` square by ``zoom`` with
    scipy's order-1 ``zoom`` (corner-aligned bilinear) and cut the central ``H x W`` back out."""
    H, W = x.shape[2:]
    ch, cw = math.ceil(H / zoom), math.ceil(W / zoom)
    top, left = (H - ch) // 2, (W - cw) // 2
    size = (round(ch * zoom), round(cw * zoom))
    big = F.interpolate(x[:, :, top : top + ch, left : left + cw], size=size, mode="bilinear", align_corners=True)
    trim_top, trim_left = (size[0] - H) // 2, (size[1] - W) // 2
    return big[:, :, trim_top : trim_top + H, trim_left : trim_left + W]


def _brightness(x: torch.Tensor, s: int, g: torch.Generator | None) -> torch.Tensor:
    """HSV value + c, hue and saturation kept: every channel scales by ``v' / v`` (black pixels,
    where hue and saturation are 0, become grey ``v'``)."""
    v = x.amax(1, keepdim=True)
    v_new = (v + _BRIGHTNESS[s]).clamp(0.0, 1.0)
    return torch.where(v > 0, x * v_new / v.clamp_min(1e-12), v_new)


def _contrast(x: torch.Tensor, s: int, g: torch.Generator | None) -> torch.Tensor:
    means = x.mean(dim=(2, 3), keepdim=True)
    return (x - means) * _CONTRAST[s] + means


_FLOAT_CORRUPTIONS: dict[str, Callable[[torch.Tensor, int, torch.Generator | None], torch.Tensor]] = {
    "gaussian_noise": _gaussian_noise,
    "shot_noise": _shot_noise,
    "impulse_noise": _impulse_noise,
    "defocus_blur": _defocus_blur,
    "zoom_blur": _zoom_blur,
    "brightness": _brightness,
    "contrast": _contrast,
}


def _pixelate(images: torch.Tensor, factor: float) -> torch.Tensor:
    """Pillow ``resize(BOX)`` to ``int(side * factor)`` and back, as two 8-bit passes per resize
    (horizontal then vertical, each rounded to uint8 as Pillow's 8-bit resampler does)."""
    _, H, W, _ = images.shape
    x = images.permute(0, 3, 1, 2).double()
    for (h_in, h_out), (w_in, w_out) in (((H, int(H * factor)), (W, int(W * factor))),
                                         ((int(H * factor), H), (int(W * factor), W))):  # fmt: skip
        x = _round_u8(torch.einsum("bchw,vw->bchv", x, _box_weights(w_in, w_out, x.device)))
        x = _round_u8(torch.einsum("bchw,uh->bcuw", x, _box_weights(h_in, h_out, x.device)))
    return x.to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def _round_u8(x: torch.Tensor) -> torch.Tensor:
    return torch.floor(x + 0.5).clamp(0, 255)


def _box_weights(size_in: int, size_out: int, device: torch.device) -> torch.Tensor:
    """Pillow's BOX resampling coefficients (``precompute_coeffs``) as a ``(size_out, size_in)`` matrix."""
    scale = size_in / size_out
    filter_scale = max(scale, 1.0)
    support = 0.5 * filter_scale
    weights = torch.zeros(size_out, size_in, dtype=torch.float64)
    for out in range(size_out):
        center = (out + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), size_in)
        for i in range(lo, hi):
            t = (i - center + 0.5) / filter_scale
            weights[out, i] = 1.0 if -0.5 <= t < 0.5 else 0.0
        weights[out] /= weights[out].sum()
    return weights.to(device)
