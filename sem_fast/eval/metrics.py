"""Evaluation metrics from logits: accuracy, calibration (ECE), OOD detection (AUROC, FPR@95).

All functions take tensors on any device; the metrics are Python floats in percent (0..100), the
unit of the paper's tables (`max_softmax` gives the OOD detector's per-image scores they rank).
"""

from __future__ import annotations

import math

import torch

#: Equal-width confidence bins of the expected calibration error (Guo et al. 2017 use 15).
ECE_BINS = 15
#: True-positive rate at which the false-positive rate of an OOD detector is reported.
TPR_LEVEL = 0.95


def _check_logits(logits: torch.Tensor, labels: torch.Tensor) -> None:
    if logits.dim() != 2 or logits.shape[0] == 0:
        raise ValueError(f"logits must be a non-empty (N, K) tensor, got shape {tuple(logits.shape)}")
    if labels.shape != (logits.shape[0],):
        raise ValueError(f"labels must have shape ({logits.shape[0]},), got {tuple(labels.shape)}")


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy (%) of ``logits (N, K)`` against ``labels (N,) int64``."""
    _check_logits(logits, labels)
    return 100.0 * int((logits.argmax(1) == labels).sum()) / labels.numel()


def expected_calibration_error(logits: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> float:
    """ECE (%): ``sum_b |B_b|/N * |acc(B_b) - conf(B_b)|`` over ``bins`` equal-width bins of the
    max-softmax confidence, bin ``b`` holding confidences in ``(b/bins, (b+1)/bins]``."""
    _check_logits(logits, labels)
    conf, pred = logits.float().softmax(1).max(1)
    correct = (pred == labels).float()
    index = (torch.ceil(conf * bins).long() - 1).clamp(0, bins - 1)
    conf_sum = torch.zeros(bins, device=conf.device).index_add_(0, index, conf)
    hit_sum = torch.zeros(bins, device=conf.device).index_add_(0, index, correct)
    return 100.0 * float((conf_sum - hit_sum).abs().sum()) / conf.numel()


def max_softmax(logits: torch.Tensor) -> torch.Tensor:
    """The MSP score ``(N,) float32`` of Hendrycks & Gimpel (2017): higher = more in-distribution."""
    return logits.float().softmax(1).amax(1)


def auroc(positive: torch.Tensor, negative: torch.Tensor) -> float:
    """Area under the ROC curve (%) separating ``positive`` scores (e.g. in-distribution) from
    ``negative`` ones: ``P(s+ > s-) + P(s+ = s-) / 2``, the Mann-Whitney statistic with tied
    scores given their average rank (so identical score sets give exactly 50)."""
    pos, neg = _scores("positive", positive), _scores("negative", negative)
    scores = torch.cat([pos, neg]).double()
    _, inverse, counts = torch.unique(scores, return_inverse=True, return_counts=True)
    # Ranks are 1-based; a group of c tied values starting after `before` smaller ones gets the
    # mean of ranks before+1 .. before+c.
    before = torch.cumsum(counts, 0) - counts
    mean_rank = before.double() + (counts.double() + 1.0) / 2.0
    rank_sum = mean_rank[inverse[: pos.numel()]].sum()
    n_pos, n_neg = pos.numel(), neg.numel()
    u = float(rank_sum) - n_pos * (n_pos + 1) / 2.0
    return 100.0 * u / (n_pos * n_neg)


def fpr_at_tpr(positive: torch.Tensor, negative: torch.Tensor, tpr: float = TPR_LEVEL) -> float:
    """False-positive rate (%) at the highest threshold whose true-positive rate is >= ``tpr``.

    A sample is called positive when its score is >= the threshold; thresholds run over the
    distinct scores, so tied scores are accepted or rejected together.
    """
    pos, neg = _scores("positive", positive), _scores("negative", negative)
    if not 0.0 < tpr <= 1.0:
        raise ValueError(f"tpr must lie in (0, 1], got {tpr}")
    # The highest threshold keeping ceil(tpr * n_pos) positives is that positive's score
    # (k-th largest); every sample scoring at least as much is accepted.
    # (the 1e-9 absorbs float error, e.g. 0.95 * 100 must give 95, not 96).
    k = max(1, math.ceil(tpr * pos.numel() - 1e-9))
    threshold = torch.sort(pos.double(), descending=True).values[k - 1]
    return 100.0 * int((neg.double() >= threshold).sum()) / neg.numel()


def _scores(name: str, scores: torch.Tensor) -> torch.Tensor:
    if not isinstance(scores, torch.Tensor) or scores.dim() != 1 or scores.numel() == 0:
        shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise ValueError(f"{name} scores must be a non-empty 1-D tensor, got {shape}")
    if not bool(torch.isfinite(scores).all()):
        raise ValueError(f"{name} scores must be finite")
    return scores.flatten()
