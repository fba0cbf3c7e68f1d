"""Training: the paper's recipes and the loop (fused SEM step, AMP, compile, DDP, checkpoints, logs).

    from sem_fast.train import get_recipe, train
    summary = train(get_recipe("demo").replace(out="runs/demo"))

Evaluation is `sem_fast.eval`, sweeps are `sem_fast.sweep`, the ``sem-fast`` command is `sem_fast.cli`.
"""

import warnings
from typing import Any

from sem_fast.train.config import TrainConfig
from sem_fast.train.loop import NonFiniteLossError, train
from sem_fast.train.recipes import RECIPES, get_recipe

__all__ = ["RECIPES", "NonFiniteLossError", "TrainConfig", "get_recipe", "train"]


def __getattr__(name: str) -> Any:
    """Deprecated: ``evaluate_checkpoint`` moved to `sem_fast.eval`."""
    if name == "evaluate_checkpoint":
        warnings.warn(
            "sem_fast.train.evaluate_checkpoint is deprecated; import it from sem_fast.eval "
            "(from sem_fast.eval import evaluate_checkpoint)",
            DeprecationWarning,
            stacklevel=2,
        )
        from sem_fast.eval import evaluate_checkpoint

        return evaluate_checkpoint
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
