"""Networks exposing ``encode(x) -> (B, D)`` pooled features and a linear ``classify(z) -> (B, K)``."""

from sem_fast.models.linear_head import LinearHeadNet
from sem_fast.models.preact_resnet import PreActResNet18
from sem_fast.models.split import SplitModel, TimmSplit, split
from sem_fast.models.wide_resnet import WideResNet

__all__ = ["LinearHeadNet", "PreActResNet18", "SplitModel", "TimmSplit", "WideResNet", "split"]
