"""Epoch planning: orders fixed by (seed, epoch), disjoint covering shards, the last-batch policy."""

from __future__ import annotations

import pytest
import torch

from sem_fast.data.epochs import batch_spans, epoch_order, epoch_seed, shard_span

CPU = torch.device("cpu")


def test_epoch_order_is_a_permutation_fixed_by_seed_and_epoch():
    order = epoch_order(1001, epoch=3, seed=7, shuffle=True, device=CPU)
    assert torch.equal(order.sort().values, torch.arange(1001))
    assert torch.equal(order, epoch_order(1001, epoch=3, seed=7, shuffle=True, device=CPU))
    assert not torch.equal(order, epoch_order(1001, epoch=4, seed=7, shuffle=True, device=CPU))
    assert not torch.equal(order, epoch_order(1001, epoch=3, seed=8, shuffle=True, device=CPU))


def test_unshuffled_order_is_the_dataset_order():
    assert torch.equal(epoch_order(17, epoch=5, seed=1, shuffle=False, device=CPU), torch.arange(17))


def test_epoch_seed_separates_swapped_and_neighbouring_pairs():
    seeds = {epoch_seed(s, e) for s in range(20) for e in range(20)}
    assert len(seeds) == 400
    assert all(0 <= s < 2**63 for s in seeds)


@pytest.mark.parametrize("num_samples,num_shards,batch_size", [(1000, 3, 64), (10, 4, 3), (3, 4, 1), (7, 1, 7)])
def test_shards_without_drop_last_are_disjoint_and_cover_every_position(num_samples, num_shards, batch_size):
    spans = [shard_span(num_samples, batch_size, False, i, num_shards) for i in range(num_shards)]
    positions = [p for start, stop in spans for p in range(start, stop)]
    assert positions == list(range(num_samples))
    sizes = [stop - start for start, stop in spans]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("num_samples,num_shards,batch_size", [(1000, 3, 64), (1001, 2, 10), (64, 1, 64), (50, 4, 3)])
def test_drop_last_gives_every_shard_the_same_number_of_full_batches(num_samples, num_shards, batch_size):
    spans = [shard_span(num_samples, batch_size, True, i, num_shards) for i in range(num_shards)]
    batches = [batch_spans(start, stop, batch_size) for start, stop in spans]
    assert len({len(b) for b in batches}) == 1
    assert len(batches[0]) == num_samples // (num_shards * batch_size)
    assert all(hi - lo == batch_size for b in batches for lo, hi in b)
    positions = [p for start, stop in spans for p in range(start, stop)]
    assert len(set(positions)) == len(positions) and max(positions) < num_samples


def test_batch_spans_keep_a_short_last_batch():
    assert batch_spans(5, 16, 4) == [(5, 9), (9, 13), (13, 16)]
    assert batch_spans(0, 1, 128) == [(0, 1)]
