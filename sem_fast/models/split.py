"""`split(model)`: give any classifier the ``encode``/``classify`` interface of `fused_sem_step`."""

from __future__ import annotations

import torch
from torch import nn

from sem_fast.models.linear_head import LinearHeadNet


class SplitModel(LinearHeadNet):
    """A classifier cut before its final linear layer: ``forward = head(body(x))``.

    Attributes:
        body: the original model with its final linear layer replaced by ``nn.Identity``, so it
            returns pooled penultimate features ``(B, D)``.
        head: that linear layer, ``(B, D) -> (B, K)``.
    """

    def __init__(self, body: nn.Module, head: nn.Linear) -> None:
        super().__init__()
        self.body = body
        self.head = head

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, D)`` features."""
        return self.body(x)



class TimmSplit(nn.Module):
    """A timm model seen through ``forward_features`` / ``forward_head(pre_logits=True)``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, num_features)`` pooled pre-logits features."""
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)

    def classify(self, z: torch.Tensor) -> torch.Tensor:
        """``(B, num_features)`` -> ``(B, num_classes)`` through timm's classifier."""
        return self.model.get_classifier()(z)

    @property
    def num_classes(self) -> int:
        """K, timm's ``num_classes`` (``fused_sem_step`` checks the labels against it before any forward)."""
        return self.model.num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.encode(x))


#: Attribute names under which torchvision-style models keep their final linear layer.
_HEAD_NAMES = ("fc", "classifier", "head", "heads")


def split(model: nn.Module) -> nn.Module:
    """Adapt ``model`` to ``encode(x) -> (B, D)`` features and a linear ``classify(z) -> (B, K)``.

    - A model that already has ``encode`` and ``classify`` is returned as is.
    - A timm model (``forward_features``, ``forward_head`` and ``get_classifier``) is wrapped in
      `TimmSplit`, whose ``encode`` is timm's pre-logits output.
    - A torchvision-style model whose last layer is a ``nn.Linear`` stored as ``fc``,
      ``classifier``, ``head`` or ``heads`` (directly, or last in an ``nn.Sequential``, as in
      VGG, EfficientNet or ViT) becomes a `SplitModel`: the linear layer moves to ``.head``
      and is replaced by ``nn.Identity`` in the model, which is modified in place.

    Raises ``TypeError`` when no final linear layer can be found.
    """
    if callable(getattr(model, "encode", None)) and callable(getattr(model, "classify", None)):
        return model
    if all(callable(getattr(model, m, None)) for m in ("forward_features", "forward_head", "get_classifier")):
        return TimmSplit(model)
    for name in _HEAD_NAMES:
        container = model
        head = getattr(model, name, None)
        while isinstance(head, nn.Sequential) and len(head) > 0:
            container, name = head, list(head._modules)[-1]
            head = getattr(container, name)
        if isinstance(head, nn.Linear):
            setattr(container, name, nn.Identity())
            return SplitModel(model, head)
    raise TypeError(
        f"split() cannot find the final nn.Linear of {type(model).__name__}: expected encode()/"
        f"classify() methods, a timm model, or a linear layer named one of {_HEAD_NAMES}"
    )
