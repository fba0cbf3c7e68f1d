"""The draws of a batch: `MixDraw` (partners, lambda, CutMix boxes) and `AugmentDraw` (crop, flip).

A leaf module (torch only): the checks, the sampler, the reference and every backend import it.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class MixDraw(NamedTuple):
    """One mixing draw for a batch of ``B`` images, all tensors on the images' device.

    Attributes:
        perm: ``(B,) int64``, partner index ``j = perm[b]`` of each sample ``b``.
        lam: ``(B,) float32``, weight of the sample's OWN label and features (after the CutMix
            area correction); ``1`` where the sample is not mixed.
        box: ``(B, 4) int32``, ``(y0, y1, x0, x1)`` half-open region pasted FROM the partner;
            all zeros for samples that are not CutMix samples.
        is_cutmix: ``(B,) bool``, whether the sample is mixed by CutMix (else by mixup).
    """

    perm: torch.Tensor
    lam: torch.Tensor
    box: torch.Tensor
    is_cutmix: torch.Tensor


class AugmentDraw(NamedTuple):
    """Per-sample crop and flip of a batch, applied to the clean images before mixing.

    With ``p = cfg.crop_padding``, the augmented image is
    ``aug[b, :, i, j] = pad(x)[b, :, i + dy, jj + dx]`` with ``jj = W - 1 - j`` where ``flip[b]``
    (else ``j``) and ``pad(x)`` the input padded by ``p`` on every side (``cfg.padding_mode``).

    Attributes:
        offset: ``(B, 2) int32``, ``(dy, dx)`` crop offsets in ``[0, 2p]``; ``p`` is no shift.
        flip: ``(B,) bool``, whether the crop is mirrored left-right.
    """

    offset: torch.Tensor
    flip: torch.Tensor
