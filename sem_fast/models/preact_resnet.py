"""PreActResNet18 (He et al. 2016, "Identity Mappings in Deep Residual Networks"), CIFAR stem.

The mixup / manifold-mixup CIFAR variant: 3x3 stem without max-pool, four stages of two
pre-activation basic blocks (64, 128, 256, 512 channels), a final BN-ReLU, global average
pooling (``encode``, 512-d) and a linear head (``classify``). 11.17 M parameters for 10 classes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sem_fast.models._init import init_weights
from sem_fast.models.linear_head import LinearHeadNet


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 with an identity (or 1x1 conv) shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut = (
            nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)
            if stride != 1 or in_planes != planes
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet18(LinearHeadNet):
    """PreActResNet18 with ``encode(x) -> (B, 8 * width)`` and ``classify(z) -> (B, num_classes)``.

    Args:
        num_classes: size of the linear head.
        width: channels of the first stage (64 in the paper; smaller for quick CPU runs).
        in_channels: input channels.
    """

    def __init__(self, num_classes: int = 10, width: int = 64, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        stages, in_planes = [], width
        for i, stride in enumerate((1, 2, 2, 2)):
            planes = width * 2**i
            stages += [PreActBlock(in_planes, planes, stride), PreActBlock(planes, planes, 1)]
            in_planes = planes
        self.layers = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(in_planes)
        self.head = nn.Linear(in_planes, num_classes)
        self.feature_dim = in_planes
        init_weights(self)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, 8 * width)`` globally average-pooled penultimate features."""
        out = self.layers(self.stem(x))
        out = F.relu(self.bn(out))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)
