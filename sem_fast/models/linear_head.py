"""`LinearHeadNet`: the ``f = classify . encode`` interface of `fused_sem_step`, with a linear head."""

from __future__ import annotations

import torch
from torch import nn


class LinearHeadNet(nn.Module):
    """A network split into an encoder and a linear head ``self.head`` (``(B, D) -> (B, K)``).

    Subclasses set ``self.head`` and implement `encode`; ``classify``, ``num_classes`` and
    ``forward`` follow from them.
    """

    head: nn.Linear

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` images -> ``(B, D)`` pooled penultimate features."""
        raise NotImplementedError

    def classify(self, z: torch.Tensor) -> torch.Tensor:
        """``(B, D)`` features -> ``(B, K)`` logits."""
        return self.head(z)

    @property
    def num_classes(self) -> int:
        """K, the logits per sample (``fused_sem_step`` checks the labels against it before any forward)."""
        return self.head.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.encode(x))
