"""What a run directory holds, by name: written by the trainer (`sem_fast.train.loop`), read by the
evaluation (`sem_fast.eval`) and the sweep (`sem_fast.sweep`), so each side imports the names
from here instead of from the other's modules.

A run directory (``TrainConfig.run_dir``) holds `CONFIG_NAME`, `CHECKPOINT_NAME` (after every
epoch), ``metrics.jsonl`` / ``metrics.csv`` (`sem_fast.train.metrics_log`), the learning curves
``curves.png`` / ``.svg`` (`sem_fast.train.curves`), `LOCK_NAME` (`sem_fast.train.run_lock`) and,
once the last epoch is done, `SUMMARY_NAME`, whose `SUMMARY_METRICS` a sweep's table can show.
``sem-fast eval`` writes into `EVAL_DIR` by default.
"""

#: The run's `TrainConfig.to_dict`, written when the run starts: the configuration the
#: directory's checkpoint must have been trained with.
CONFIG_NAME = "config.json"
#: The checkpoint of the last finished epoch (`sem_fast.train.checkpoint`).
CHECKPOINT_NAME = "checkpoint.pt"
#: The summary `sem_fast.train.train` returns, written after the last epoch.
SUMMARY_NAME = "summary.json"
#: Per-epoch records (`sem_fast.train.metrics_log`).
METRICS_NAMES = ("metrics.jsonl", "metrics.csv")
#: TensorBoard's event folder, when tensorboard is installed.
TENSORBOARD_DIR = "tensorboard"
#: The learning curves, ``<CURVES_STEM>.png`` and ``.svg``, redrawn after every epoch.
CURVES_STEM = "curves"
#: The default output folder of ``sem-fast eval`` for the run.
EVAL_DIR = "eval"
#: Held (an exclusive lock) by the process training in the directory, for its whole life.
LOCK_NAME = ".lock"
#: The summary's test (and validation) accuracies (%): after the last epoch, and the best
#: evaluated epoch's test accuracy; ``final_val_acc`` is None without a validation split.
SUMMARY_METRICS = ("final_test_acc", "best_test_acc", "final_val_acc")
#: Everything the trainer and the evaluation write into a run directory (but the lock): what
#: ``train --overwrite`` removes, so nothing of the earlier run outlives it.
RUN_OUTPUTS = (CONFIG_NAME, CHECKPOINT_NAME, SUMMARY_NAME, *METRICS_NAMES, TENSORBOARD_DIR, f"{CURVES_STEM}.png",
               f"{CURVES_STEM}.svg", EVAL_DIR)  # fmt: skip
