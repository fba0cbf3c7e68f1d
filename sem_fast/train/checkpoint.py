"""Checkpoints: everything an exact resume needs, written atomically at the end of every epoch.

A checkpoint is a dict saved with `torch.save` (loadable with ``weights_only=True``):

- ``format``: `FORMAT`; ``config``: `TrainConfig.to_dict`; ``epoch``: epochs completed;
  ``step``: optimizer steps completed; ``history``: the epoch records logged so far;
- ``model``, ``optimizer``, ``scheduler``, ``scaler``: their ``state_dict()``;
- ``train_loader``: the loader's ``state_dict()`` (the next epoch; its order is a function of
  ``(seed, epoch)``);
- ``rng``: the state of the step's mixing generator and of the global torch (CPU and CUDA),
  numpy and python generators;
- ``world_size``: the number of DDP processes of the run (1 without DDP; absent in checkpoints
  written before DDP, read as 1); under DDP also ``rank_generators``: every rank's mixing
  generator state, by rank (the model and the rest are rank 0's).
"""

from __future__ import annotations

import os
import pickle
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sem_fast.train.run_files import CHECKPOINT_NAME

#: Format tag stored in every checkpoint: the trainer's package and the format's version.
FORMAT = "sem_fast.train/1"
_KEYS = ("format", "config", "epoch", "step", "history", "model", "optimizer", "scheduler", "scaler",
         "train_loader", "rng")  # fmt: skip


def capture_rng(generator: torch.Generator) -> dict[str, Any]:
    """The state of ``generator`` and of the global random number generators."""
    np_state = np.random.get_state()
    return {
        "generator": generator.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": (np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]),
        "python": random.getstate(),
    }


def restore_rng(state: dict[str, Any], generator: torch.Generator) -> None:
    """Inverse of `capture_rng`."""
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy(), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` (keys `_KEYS`) to ``path`` atomically: a crash mid-write leaves the old file."""
    missing = set(_KEYS) - set(state)
    if missing:
        raise ValueError(f"checkpoint state lacks {sorted(missing)}")
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint` onto the CPU; clear errors when it is not one."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path} (a run directory holds {CHECKPOINT_NAME})")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for corrupt or foreign files
        raise ValueError(f"{path} is not a readable sem_fast checkpoint: {_why_unreadable(err)}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{path} is not a sem_fast training checkpoint (format {FORMAT!r}), found {found!r}")
    return state


def _why_unreadable(err: Exception) -> str:
    """Our reason for a failed ``torch.load``, instead of torch's text (which suggests loading the
    file with ``weights_only=False``, i.e. running whatever code it holds)."""
    if isinstance(err, pickle.UnpicklingError):
        found = re.search(r"GLOBAL (\S+) was not an allowed global", str(err))
        if found:
            return (f"it holds a Python object of type {found.group(1)} (a pickled model or class?), which "
                    f"sem_fast never loads: checkpoints are read without running code and hold only tensors "
                    f"and plain containers, as `sem-fast train` writes them")  # fmt: skip
        return "it is truncated or not a file written by torch.save"
    return f"it is truncated or not a file written by torch.save ({type(err).__name__}: {str(err).splitlines()[0]})"
