"""What a run directory holds, by name: written by the trainer (`sem_fast.train.loop`), read by the
evaluation (`sem_fast.eval`) and the sweep (`sem_fast.sweep`), so each side imports the names
from here instead of from the other's modules.

A run directory (``TrainConfig.run_dir``) holds `CONFIG_NAME`, `CHECKPOINT_NAME` (after every
epoch), ``metrics.jsonl`` / ``metrics.csv`` (`sem_fast.train.metrics_log`) and, once the last
epoch is done, `SUMMARY_NAME`, whose `SUMMARY_METRICS` a sweep's table can show.
"""

#: The run's `TrainConfig.to_dict`, written when the run starts.
CONFIG_NAME = "config.json"
#: The checkpoint of the last finished epoch (`sem_fast.train.checkpoint`).
CHECKPOINT_NAME = "checkpoint.pt"
#: The summary `sem_fast.train.train` returns, written after the last epoch.
SUMMARY_NAME = "summary.json"
#: The summary's test accuracies (%): after the last epoch, and the best evaluated epoch's.
SUMMARY_METRICS = ("final_test_acc", "best_test_acc")
