"""The sharded epoch sampler: every index once per epoch across processes, an order that depends on the
seed and the epoch only, and a resumption mid-epoch."""

from __future__ import annotations

import pytest

from sepconv.train.data import ShardedEpochSampler


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_sharded_sampler_covers_every_index_once_per_epoch(world_size):
    shards = [
        list(
            ShardedEpochSampler(
                range(10), batch_size=2, seed=3, shuffle=True, rank=rank, world_size=world_size
            )
        )
        for rank in range(world_size)
    ]
    assert len({len(shard) for shard in shards}) == 1
    assert set().union(*map(set, shards)) == set(range(10))
    assert sum(map(len, shards)) == -(-10 // world_size) * world_size  # padded by repeating the start


def test_sampler_order_depends_on_seed_and_epoch_only_and_resumes_mid_epoch():
    sampler = ShardedEpochSampler(range(50), batch_size=8, seed=1, shuffle=True)
    sampler.set_epoch(2)
    full = list(sampler)
    assert list(sampler) == full  # a pure function of (seed, epoch)
    sampler.set_epoch(3)
    assert list(sampler) != full
    sampler.set_epoch(2)
    sampler.start_batch = 3
    assert list(sampler) == full[24:]
    assert list(sampler) == full  # the skip applies to one iteration only
