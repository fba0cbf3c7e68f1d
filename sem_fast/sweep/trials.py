"""Where a trial stands on disk, and the ``sem-fast train`` command line that runs it.

A trial's directory (``<out>/trials/<name>``) is a normal run directory; its state:

- ``finished``: ``summary.json`` holds the trial's configuration (the run reached its last epoch);
- ``stopped``: ``stopped.json`` exists (an early-stopping scheduler ended it; not resumed);
- ``interrupted``: ``checkpoint.pt`` exists without a summary (crash, Ctrl-C): resumed;
- ``new``: nothing to continue.
"""

from __future__ import annotations

import json
import typing
from dataclasses import fields
from typing import Any, Literal

from sem_fast.sweep.spec import Trial, identity
from sem_fast.train import RECIPES, TrainConfig
from sem_fast.train.run_files import CHECKPOINT_NAME, SUMMARY_NAME

TrialState = Literal["finished", "stopped", "interrupted", "new"]
#: Written by the Ray backend when ASHA stops a trial early: ``{"epoch": ..., "test_acc": ...}``.
STOPPED_NAME = "stopped.json"
_HINTS = typing.get_type_hints(TrainConfig)


def trial_state(trial: Trial) -> TrialState:
    """The state of ``trial``'s directory; ``ValueError`` when its summary is another run's."""
    summary = read_summary(trial)
    if summary is not None:
        return "finished"
    if (trial.dir / STOPPED_NAME).is_file():
        return "stopped"
    if (trial.dir / CHECKPOINT_NAME).is_file():
        return "interrupted"
    return "new"


def read_summary(trial: Trial) -> dict[str, Any] | None:
    """The trial's ``summary.json``, or None when it has none; ``ValueError`` when the summary
    belongs to another configuration (a directory copied or edited by hand)."""
    path = trial.dir / SUMMARY_NAME
    if not path.is_file():
        return None
    summary = json.loads(path.read_text())
    saved = TrainConfig.from_dict(summary["config"])
    if identity(saved, with_seed=True) != identity(trial.config, with_seed=True):
        raise ValueError(f"{path} is the summary of another configuration than trial {trial.name}; move it away")
    return summary


def config_to_argv(config: TrainConfig) -> list[str]:
    """``sem-fast train`` arguments that rebuild ``config`` exactly: ``--recipe`` when it names a
    recipe, then a flag for every field that differs from that recipe (or from the defaults)."""
    base = RECIPES.get(config.recipe)
    argv = ["--recipe", config.recipe] if base is not None else []
    if base is None:
        base = TrainConfig()
        if config.recipe != base.recipe:
            raise ValueError(f"recipe {config.recipe!r} is not a recipe name: `sem-fast train` cannot set it")
    for f in fields(TrainConfig):
        value = getattr(config, f.name)
        if f.name == "recipe" or value == getattr(base, f.name):
            continue
        flag = "--" + f.name.replace("_", "-")
        hint = _HINTS[f.name]
        if hint in (bool, bool | None):
            if value is None:  # compile=None is the default; a recipe never sets it
                raise ValueError(f"{f.name}=None differs from the recipe's {getattr(base, f.name)!r}: no flag gives it")
            argv.append(flag if value else "--no-" + flag[2:])
        elif typing.get_origin(hint) is tuple:
            argv.append(f"{flag}={','.join(repr(v) if isinstance(v, float) else str(v) for v in value)}")
        else:
            argv.append(f"{flag}={value!r}" if isinstance(value, float) else f"{flag}={value}")
    return argv

