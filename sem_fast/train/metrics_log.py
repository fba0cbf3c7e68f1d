"""Per-epoch metrics of a run: ``metrics.jsonl``, ``metrics.csv`` and TensorBoard when installed."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

#: The fields of one epoch record, in CSV column order.
COLUMNS = (
    "epoch",  # 1-based epoch just finished
    "step",  # optimizer steps so far
    "mix",  # mixing of the epoch: the recipe's mix, or 'none' (ERM, or the early-stop phase)
    "lr",  # learning rate used by the epoch's last step
    "train_loss",  # mean over the epoch's steps of ce + gamma * sem
    "train_ce",  # mean mixed cross-entropy
    "train_sem",  # mean SEM term (0 when the clean pass is skipped)
    "train_acc",  # % of mixed samples classified as their own label, lambda-weighted with the partner's
    "test_loss",  # clean test cross-entropy (empty on epochs without evaluation)
    "test_acc",  # clean test top-1 accuracy, %
    "val_loss",  # cross-entropy on the validation split (empty without --val-split or evaluation)
    "val_acc",  # top-1 accuracy on the validation split, %
    "epoch_time_s",  # wall time of the epoch's training steps
    "img_per_s",  # training images per second over the epoch
    "elapsed_s",  # training + evaluation wall time of the run so far (resumes included)
)


def json_safe(value: Any) -> Any:
    """``value`` with non-finite floats replaced by None (strict JSON has no NaN/Infinity)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


class MetricsLog:
    """Writes epoch records to ``run_dir``; on resume the files are rewritten from ``history``
    (the records stored in the checkpoint), so an epoch interrupted after logging is not doubled."""

    def __init__(self, run_dir: Path, history: list[dict[str, Any]]) -> None:
        self.jsonl_path = run_dir / "metrics.jsonl"
        self.csv_path = run_dir / "metrics.csv"
        with self.jsonl_path.open("w") as f:
            f.writelines(json.dumps(json_safe(r), allow_nan=False) + "\n" for r in history)
        with self.csv_path.open("w", newline="") as f:
            writer = csv.DictWriter(f, COLUMNS)
            writer.writeheader()
            writer.writerows(history)
        self.tensorboard = _tensorboard_writer(run_dir / "tensorboard", purge_step=len(history) + 1)

    def append(self, record: dict[str, Any]) -> None:
        """Add the record of one epoch (keys: `COLUMNS`)."""
        if set(record) != set(COLUMNS):
            raise ValueError(f"an epoch record needs exactly the keys {COLUMNS}, got {sorted(record)}")
        with self.jsonl_path.open("a") as f:
            f.write(json.dumps(json_safe(record), allow_nan=False) + "\n")
        with self.csv_path.open("a", newline="") as f:
            csv.DictWriter(f, COLUMNS).writerow(record)
        if self.tensorboard is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("epoch", "step"):
                    self.tensorboard.add_scalar(key, value, record["epoch"])
            self.tensorboard.flush()

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()


def _tensorboard_writer(log_dir: Path, purge_step: int) -> Any:
    """A TensorBoard ``SummaryWriter`` when the ``tensorboard`` package is installed, else None.

    ``purge_step`` drops events a previous, interrupted run logged at or after that epoch."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(log_dir), purge_step=purge_step)
