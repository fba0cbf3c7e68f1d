"""Batched inference on uint8 batches: the logits of a whole loader."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import NamedTuple

import torch
from torch import nn

from sem_fast.config import SEMConfig
from sem_fast.reference import normalize

#: A function applied to each raw batch before normalization: uint8 (B, H, W, C) -> same.
BatchTransform = Callable[[torch.Tensor], torch.Tensor]


class Predictions(NamedTuple):
    """Outputs over a dataset, on the model's device: ``logits (N, K) float32``, ``labels (N,) int64``."""

    logits: torch.Tensor
    labels: torch.Tensor


def prepare(images: torch.Tensor, cfg: SEMConfig) -> torch.Tensor:
    """uint8 ``(B, H, W, C)`` -> normalized ``(B, C, H, W)`` float32 (channels-last if ``cfg.channels_last``)."""
    x = normalize(images, cfg)
    return x.contiguous(memory_format=torch.channels_last) if cfg.channels_last else x


@torch.no_grad()
def predict(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    cfg: SEMConfig,
    *,
    amp_dtype: torch.dtype | None = None,
    transform: BatchTransform | None = None,
) -> Predictions:
    """Run ``model`` in eval mode over ``batches`` of ``(uint8 (B, H, W, C), labels (B,))``.

    Images are normalized with ``cfg.mean``/``cfg.std``; ``transform`` (e.g. a corruption) is
    applied to the raw uint8 batch first. The model's train/eval mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    logits, labels = [], []
    try:
        for images, y in batches:
            if transform is not None:
                images = transform(images)
            with torch.autocast(images.device.type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
                out = model.classify(model.encode(prepare(images, cfg)))
            logits.append(out.float())
            labels.append(y)
    finally:
        model.train(was_training)
    return Predictions(torch.cat(logits), torch.cat(labels))
