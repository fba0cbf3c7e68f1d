"""Data-parallel training across processes (``torchrun``): which rank this is, the process group,
the DDP-wrapped step module, and the few collectives the loop needs.

A run is distributed when ``WORLD_SIZE > 1`` in the environment (``torchrun`` sets it, with
``RANK`` and ``LOCAL_RANK``), or when the caller has already initialized a process group of
more than one rank. Choices (README, "DDP"):

- ``batch_size`` is the *global* batch: each rank trains on ``batch_size / world_size`` images
  per step from its shard of the epoch order (``drop_last``, so every rank runs the same number
  of steps), and one optimizer step averages the ranks' gradients. The recipes' learning rates
  thus keep their meaning whatever the number of GPUs.
- BatchNorm is per rank (no SyncBatchNorm): batch statistics and the mixing partners
  (``x[perm]``) come from the rank's own ``batch_size / world_size`` images, as in
  single-GPU ghost batches. A step equals one process averaging the losses of the per-rank
  sub-batches, each normalized by its own statistics (tested on CPU with gloo; PyTorch's
  SyncBatchNorm runs on GPUs only). Rank 0's running statistics are the ones checkpointed
  and evaluated (DDP broadcasts them to the other ranks before every step).
- Each rank draws its own mixing coefficients (its generator is seeded by ``(seed, rank)``).
- Only rank 0 writes files (config, metrics, checkpoints, summary) and the progress line.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class Ranks:
    """This process's place in the run: ``rank`` of ``world_size``, on local GPU ``local_rank``.
    A single-process run is ``Ranks(0, 1, 0)``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this rank writes the run's files."""
        return self.rank == 0


def ranks_from_environment() -> Ranks:
    """The ranks of an initialized process group, else of ``torchrun``'s environment variables
    (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), else a single process."""
    if dist.is_available() and dist.is_initialized():
        local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
        return Ranks(dist.get_rank(), dist.get_world_size(), local)
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return Ranks()
    rank, local = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if not 0 <= rank < world:
        raise ValueError(f"RANK must be in [0, WORLD_SIZE={world}), got {rank}")
    return Ranks(rank, world, local)


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name, "")
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {text!r}") from None


def rank_device(device: str, ranks: Ranks) -> str:
    """The device name of this rank: ``cuda:LOCAL_RANK`` for ``'auto'`` (with CUDA) or ``'cuda'``;
    ``'cpu'`` as given. A device index under DDP is refused: each rank owns its local GPU."""
    if not ranks.distributed:
        return device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        return f"cuda:{ranks.local_rank}"
    if device.startswith("cuda:"):
        raise ValueError(
            f"device (--device) {device!r}: under DDP each rank uses cuda:LOCAL_RANK; pass --device cuda or auto"
        )
    return device


def init_process_group(ranks: Ranks, device: torch.device) -> None:
    """Join the ``torchrun`` process group (NCCL on CUDA, gloo on the CPU) unless one exists.

    The group stays for later runs of the process and is destroyed at exit: destroying it after
    each run and joining again on the same ``MASTER_PORT`` races (a fast rank can reach the
    previous run's store before rank 0 has closed it, and hang).
    """
    if not ranks.distributed or dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=ranks.rank, world_size=ranks.world_size)
    atexit.register(_destroy_process_group)


def _destroy_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def wrap_step_module(step_module: nn.Module, ranks: Ranks) -> nn.Module:
    """``step_module`` (a module whose one ``forward`` runs the whole SEM step, the loop's
    `StepModule`) in DDP when distributed.

    The SEM step calls ``model.encode`` twice and ``model.classify`` once, never
    ``model.forward``; DDP prepares its gradient all-reduce in ``forward``, so the module it wraps
    must be the whole step, not the model. Parameters start equal (DDP broadcasts rank 0's at
    construction) and stay equal through the averaged gradients; DDP's default buffer broadcast
    hands rank 0's BatchNorm running statistics to every rank before each step (each rank then
    updates them with its own batch; rank 0's are the ones saved).
    """
    if not ranks.distributed:
        return step_module
    return DistributedDataParallel(step_module)


def mean_over_ranks(tensor: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    """The element-wise mean of ``tensor`` over the ranks (``tensor`` itself in one process)."""
    if not ranks.distributed:
        return tensor
    total = tensor.clone()
    dist.all_reduce(total)
    return total / ranks.world_size


def gather_objects(value: Any, ranks: Ranks) -> list[Any]:
    """``[value of rank 0, value of rank 1, ...]`` on every rank (``[value]`` in one process)."""
    if not ranks.distributed:
        return [value]
    out: list[Any] = [None] * ranks.world_size
    dist.all_gather_object(out, value)
    return out


def generator_seed(seed: int, ranks: Ranks) -> int:
    """Seed of this rank's mixing generator: ``seed`` in one process (unchanged runs), a hash
    of ``(seed, rank)`` under DDP so ranks draw different coefficients."""
    if not ranks.distributed:
        return seed
    return int(np.random.SeedSequence([seed, ranks.rank]).generate_state(1, dtype=np.uint64)[0] >> 1)


def barrier(ranks: Ranks) -> None:
    """Wait for every rank (nothing in one process)."""
    if ranks.distributed:
        dist.barrier()
