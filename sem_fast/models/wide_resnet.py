"""WideResNet-d-k (Zagoruyko & Komodakis 2016), CIFAR version; WRN-28-10 has 36.5 M parameters.

A 3x3 stem (16 channels), three stages of ``(depth - 4) / 6`` pre-activation wide blocks
(``16k, 32k, 64k`` channels, strides 1, 2, 2), a final BN-ReLU, global average pooling
(``encode``, ``64k``-d) and a linear head (``classify``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sem_fast.models._init import init_weights
from sem_fast.models.linear_head import LinearHeadNet


class WideBlock(nn.Module):
    """BN-ReLU-conv3x3-(dropout)-BN-ReLU-conv3x3 with an identity (or 1x1 conv) shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.shortcut = (
            nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)
            if stride != 1 or in_planes != planes
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.dropout(self.conv1(out))
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class WideResNet(LinearHeadNet):
    """WideResNet-``depth``-``widen`` with ``encode(x) -> (B, 64 * widen)`` and a linear ``classify``.

    Args:
        depth: total depth, ``6n + 4`` (28 in the paper).
        widen: width multiplier ``k`` (10 in the paper).
        num_classes: size of the linear head.
        dropout: dropout between the two convolutions of a block (0 in the paper's setting).
        in_channels: input channels.
    """

    def __init__(
        self, depth: int = 28, widen: int = 10, num_classes: int = 10, dropout: float = 0.0, in_channels: int = 3
    ) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(f"depth must be 6n + 4 with n >= 1 (e.g. 28), got {depth}")
        if widen < 1:
            raise ValueError(f"widen must be >= 1, got {widen}")
        n = (depth - 4) // 6
        self.stem = nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False)
        blocks, in_planes = [], 16
        for planes, stride in ((16 * widen, 1), (32 * widen, 2), (64 * widen, 2)):
            for i in range(n):
                blocks.append(WideBlock(in_planes, planes, stride if i == 0 else 1, dropout))
                in_planes = planes
        self.layers = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(in_planes)
        self.head = nn.Linear(in_planes, num_classes)
        self.feature_dim = in_planes
        init_weights(self)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, 64 * widen)`` globally average-pooled penultimate features."""
        out = F.relu(self.bn(self.layers(self.stem(x))))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)
