"""Evaluation of a trained checkpoint: clean accuracy and calibration, natural shift, corruptions,
OOD detection and the paper's Fig. 3 embedding (``sem-fast eval``).

    from sem_fast.eval import evaluate_checkpoint
    report = evaluate_checkpoint("runs/demo")   # also writes runs/demo/eval/eval.json, eval.md, embedding.png

Modules: `evaluate` (the suite and its report), `corruptions` (CIFAR-10-C corruptions computed on
the fly), `metrics` (accuracy, ECE, AUROC, FPR@95 from logits), `embedding` (Fig. 3). The
robustness sets' readers are in `sem_fast.data`.
"""

from sem_fast.eval.corruptions import CORRUPTIONS, SEVERITIES, corrupt
from sem_fast.eval.embedding import equivariance_gap, mixed_features
from sem_fast.eval.evaluate import evaluate_checkpoint, to_markdown
from sem_fast.eval.metrics import accuracy, auroc, expected_calibration_error, fpr_at_tpr, max_softmax

__all__ = [
    "CORRUPTIONS", "SEVERITIES", "accuracy", "auroc", "corrupt", "equivariance_gap", "evaluate_checkpoint",
    "expected_calibration_error", "fpr_at_tpr", "max_softmax", "mixed_features", "to_markdown",
]  # fmt: skip
