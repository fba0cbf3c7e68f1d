"""Which samples a loader visits in an epoch: the shuffled order, the shard and the last batch.

Shared by every backend, so that for a given ``(seed, epoch)`` they cut the same order the
same way. The order of epoch ``e`` is a pure function of ``(seed, e)`` and of the device type
the permutation is drawn on (CPU and CUDA generators give different permutations); every shard
draws the same permutation and takes its own contiguous part:

- ``drop_last=False``: shard ``i`` of ``S`` holds positions ``[i*N//S, (i+1)*N//S)``; shards
  are disjoint and cover all ``N`` samples (sizes differ by at most one), and the last batch of
  a shard may be short.
- ``drop_last=True``: each shard holds ``(N//S)//B`` full batches from the start of its part
  ``[i*(N//S), ...)``; every shard yields the same number of batches (what DDP needs) and up to
  ``N - S*B*((N//S)//B)`` samples are left out of the epoch (a different set each epoch when
  shuffling).
"""

from __future__ import annotations

import numpy as np
import torch


def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed for epoch ``epoch`` of a run seeded ``seed`` (numpy's SeedSequence hash, so
    neighbouring ``(seed, epoch)`` pairs give unrelated streams)."""
    words = np.random.SeedSequence([seed, epoch]).generate_state(2, dtype=np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


def epoch_order(num_samples: int, epoch: int, seed: int, shuffle: bool, device: torch.device) -> torch.Tensor:
    """``(num_samples,)`` int64 on ``device``: a permutation drawn there (``shuffle``) or ``arange``."""
    if not shuffle:
        return torch.arange(num_samples, device=device)
    generator = torch.Generator(device=device).manual_seed(epoch_seed(seed, epoch))
    return torch.randperm(num_samples, generator=generator, device=device)


def shard_span(num_samples: int, batch_size: int, drop_last: bool, shard_id: int, num_shards: int) -> tuple[int, int]:
    """``(start, stop)``: the positions of the epoch order that shard ``shard_id`` visits."""
    if drop_last:
        part = num_samples // num_shards
        start = shard_id * part
        return start, start + part // batch_size * batch_size
    return shard_id * num_samples // num_shards, (shard_id + 1) * num_samples // num_shards


def batch_spans(start: int, stop: int, batch_size: int) -> list[tuple[int, int]]:
    """Consecutive ``(lo, hi)`` batches of ``[start, stop)``; the last one may be short."""
    return [(lo, min(lo + batch_size, stop)) for lo in range(start, stop, batch_size)]
