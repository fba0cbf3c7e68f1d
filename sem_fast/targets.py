"""`soft_targets`: the soft labels of a draw, as timm's ``Mixup`` and torchvision's v2 ``MixUp``/``CutMix`` return them.

sem_fast never materializes these (its loss op folds them into the cross-entropy), but a user
who checks our mixing against timm or torchvision, or reuses their soft-target losses (timm's
``SoftTargetCrossEntropy``, ``F.cross_entropy`` with probabilities), needs them:

    draw = sample_draw(B, H, W, cfg)
    targets = soft_targets(labels, draw, num_classes=1000, label_smoothing=cfg.label_smoothing)
    # -(targets * logits.log_softmax(1)).sum(1).mean() == sem_fast's mixed cross-entropy

timm's ``mixup_target(y, K, lam, smoothing)`` is ``soft_targets`` of a draw with
``perm = flip`` (``pairing='flip'``); torchvision's labels are those of ``perm = roll(1)``
(partner ``b - 1``) without smoothing. Equal up to float32 rounding (tests/test_timm_compat.py).
"""

from __future__ import annotations

import numbers

import torch

from sem_fast._checks import check_draw, check_labels, check_positive_int, check_tensor
from sem_fast.draws import MixDraw
from sem_fast.reference import mixed_targets


def soft_targets(labels: torch.Tensor, draw: MixDraw, num_classes: int, label_smoothing: float = 0.0) -> torch.Tensor:
    """Soft labels ``lam * s(y_b) + (1 - lam) * s(y_perm[b])`` with ``s(y)`` the one-hot label
    smoothed to ``1 - label_smoothing + label_smoothing / K`` on ``y`` and ``label_smoothing / K``
    elsewhere (timm's ``mixup_target``; ``F.cross_entropy(label_smoothing=...)``'s target).

    Args:
        labels: ``(B,) int64|int32`` class indices in ``[0, num_classes)``.
        draw: the `MixDraw` of the batch (``perm``, ``lam``; on the labels' device).
        num_classes: ``K``, an int >= 1.
        label_smoothing: in ``[0, 1)``.

    Returns:
        ``(B, K) float32`` on the labels' device; each row sums to 1.
    """
    check_positive_int("num_classes", num_classes)
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, numbers.Real):
        raise TypeError(f"label_smoothing must be a number, got {label_smoothing!r}")
    if not 0 <= label_smoothing < 1:
        raise ValueError(f"label_smoothing must lie in [0, 1), got {label_smoothing}")
    if check_tensor("labels", labels).dim() != 1:
        raise ValueError(f"labels must be a (B,) tensor of class indices, got shape {tuple(labels.shape)}")
    check_labels(labels, labels.shape[0], labels.device, num_classes)
    check_draw(draw, labels.shape[0], labels.device)
    return mixed_targets(labels, draw, num_classes, float(label_smoothing))
