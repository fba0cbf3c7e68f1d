"""Training and evaluation: the paper's recipes, the loop, the evaluation suite and the ``sem-fast`` CLI.

    from sem_fast.train import evaluate_checkpoint, get_recipe, train
    summary = train(get_recipe("demo").replace(out="runs/demo"))
    report = evaluate_checkpoint("runs/demo")
"""

from sem_fast.train.config import TrainConfig
from sem_fast.train.evaluate import evaluate_checkpoint
from sem_fast.train.loop import NonFiniteLossError, train
from sem_fast.train.recipes import RECIPES, get_recipe

__all__ = ["RECIPES", "NonFiniteLossError", "TrainConfig", "evaluate_checkpoint", "get_recipe", "train"]
