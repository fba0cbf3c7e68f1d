"""The run directory over a trainer's life: created and locked, cleared by ``--overwrite``,
removed again when a start fails, and the checks a ``--resume`` must pass.

- One trainer at a time: the directory's lock (`sem_fast.train.run_lock`) is held from before
  anything is read or written until the trainer ends.
- Nothing is replaced unasked: a directory holding a checkpoint or a summary needs ``resume``
  (continue) or ``overwrite``, which removes every output of the earlier run (`RUN_OUTPUTS`,
  its ``eval/`` included) before anything new is written.
- A failed start leaves no trace: a directory this trainer created is removed again when the
  trainer fails before its first checkpoint.
- A checkpoint is only resumed by its own run: its configuration must equal the directory's
  ``config.json`` and the requested one (but `RESUMABLE_CHANGES`); ``epochs`` may change only
  where the run's length shapes nothing that already happened (`extendable`).
"""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from sem_fast.train.config import RESUMABLE_CHANGES, TrainConfig
from sem_fast.train.distributed import Ranks, barrier
from sem_fast.train.run_files import CHECKPOINT_NAME, CONFIG_NAME, RUN_OUTPUTS, SUMMARY_NAME
from sem_fast.train.run_lock import hold_lock


@contextmanager
def open_run_directory(run_dir: Path, ranks: Ranks, *, resume: bool, overwrite: bool) -> Iterator[None]:
    """Hold ``run_dir`` (created when missing) for the ``with`` block, on rank 0; the other ranks
    wait until rank 0 has it ready. Raises ``FileExistsError`` when it holds a run and neither
    ``resume`` nor ``overwrite`` is set, `DirectoryInUseError` when another process trains in it."""
    if not ranks.is_main:
        barrier(ranks)
        yield
        return
    created = None  # the outermost folder of run_dir that this call creates
    for folder in (run_dir, *run_dir.parents):
        if folder.exists():
            break
        created = folder
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        with hold_lock(run_dir):
            if overwrite:
                remove_outputs(run_dir)
            elif not resume:
                held = [name for name in (CHECKPOINT_NAME, SUMMARY_NAME) if (run_dir / name).exists()]
                if held:
                    raise FileExistsError(
                        f"{run_dir} holds a run ({', '.join(held)}): continue it with --resume, start it over with "
                        f"--overwrite (removes its checkpoint, metrics, curves and eval/), or choose another --out"
                    )
            barrier(ranks)  # the other ranks look for a checkpoint once rank 0 has cleared the directory
            yield
    except BaseException:
        if created is not None and not (run_dir / CHECKPOINT_NAME).exists():
            shutil.rmtree(created, ignore_errors=True)
        raise


def remove_outputs(run_dir: Path) -> None:
    """Delete every file and folder the trainer and the evaluation write into ``run_dir``."""
    for name in RUN_OUTPUTS:
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def extendable(config: TrainConfig) -> bool:
    """Whether ``config``'s run may be resumed with another ``epochs``: only when nothing is laid
    out over the run's length (a constant lr, no early stop), so the epochs done are those of a
    run of any length."""
    return config.schedule == "constant" and config.early_stop_epochs == 0


def check_resume(config: TrainConfig, checkpoint: dict[str, Any], run_dir: Path, world_size: int) -> None:
    """Refuse (``ValueError``, with the differences) to resume ``checkpoint`` as the run ``config``
    unless it is that run's; warn when the CPU thread count changed (the rest of the run then
    differs in the last bits from an uninterrupted one)."""
    path = run_dir / CHECKPOINT_NAME
    saved = TrainConfig.from_dict(checkpoint["config"])
    recorded_path = run_dir / CONFIG_NAME
    if recorded_path.is_file():
        recorded = TrainConfig.from_dict(json.loads(recorded_path.read_text()))
        differ = _differences(recorded, saved, skip_epochs=extendable(saved))
        if differ:
            raise ValueError(
                f"{path} is not the checkpoint of the run in {run_dir}: its configuration differs from "
                f"{CONFIG_NAME} ({', '.join(f'{k}: {a!r} in {CONFIG_NAME}, {b!r} in the checkpoint' for k, a, b in differ)}"
                f"); move it away, or start the run over with --overwrite"
            )
    differ = _differences(saved, config, skip_epochs=True)
    if differ:
        diffs = ", ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in differ)
        raise ValueError(f"--resume needs the run's configuration; these differ from {path}: {diffs}")
    if config.epochs != saved.epochs:
        _check_new_length(saved, config, checkpoint["epoch"])
    saved_world = checkpoint.get("world_size", 1)
    if saved_world != world_size:
        raise ValueError(
            f"{path} was written by a run of {saved_world} process(es) (torchrun --nproc_per_node); resume it "
            f"with the same number, not {world_size}"
        )
    saved_threads, threads = checkpoint.get("threads"), torch.get_num_threads()
    if saved_threads is not None and saved_threads != threads:
        warnings.warn(
            f"resuming with {threads} CPU thread(s); {path} was written with {saved_threads}: on the CPU, PyTorch's "
            f"convolution and BatchNorm gradients depend on the thread count, so the rest of the run will not be "
            f"bit-identical to an uninterrupted one (set OMP_NUM_THREADS={saved_threads} for that)",
            stacklevel=3,
        )


def _differences(a: TrainConfig, b: TrainConfig, *, skip_epochs: bool) -> list[tuple[str, Any, Any]]:
    first, second = a.to_dict(), b.to_dict()
    skip = set(RESUMABLE_CHANGES) | ({"epochs"} if skip_epochs else set())
    return [(k, first[k], second[k]) for k in sorted(first) if k not in skip and first[k] != second[k]]


def _check_new_length(saved: TrainConfig, config: TrainConfig, done: int) -> None:
    if not (extendable(saved) and extendable(config)):
        shaped = [f"the {saved.schedule} lr schedule"] * (saved.schedule != "constant")
        shaped += ["the early stop"] * (saved.early_stop_epochs > 0 or config.early_stop_epochs > 0)
        raise ValueError(
            f"--resume cannot change epochs ({saved.epochs} -> {config.epochs}): {' and '.join(shaped)} "
            f"{'is' if len(shaped) == 1 else 'are'} laid out over the run's length, so the {done} epoch(s) trained "
            f"are not those of a {config.epochs}-epoch run. Train a new run with --epochs {config.epochs} "
            f"(--overwrite, or another --out); runs with --schedule constant and no early stop can be extended"
        )
    if config.epochs < done:
        raise ValueError(f"--epochs {config.epochs} is fewer than the {done} epochs this run has trained already")
