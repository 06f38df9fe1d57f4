"""How a global batch is split between processes, which keyed dropout relies on, and the one case where
N processes see other samples than one process: a split whose size N does not divide.

Pinned here because the README states it: each process takes every N-th sample of the epoch's order
(``DistributedSampler``), so global step k of N processes is exactly one process's batch k, rank r
holding its rows r::N; a split of S samples is padded to a multiple of N by repeating the first samples
of the order, which then count twice in that epoch (loss, gradients, BatchNorm statistics, metrics).
"""

from __future__ import annotations

import torch
from torch.utils.data import TensorDataset

from sepconv.train.data import make_loader


def _epoch(size: int, *, batch_size: int, world_size: int) -> list[list[list[int]]]:
    """Per rank, the sample indices of each batch of epoch 0."""
    data = TensorDataset(torch.arange(size))
    return [
        [
            batch[0].tolist()
            for batch in make_loader(
                data,
                batch_size=batch_size // world_size,
                seed=4,
                shuffle=True,
                rank=rank,
                world_size=world_size,
            )
        ]
        for rank in range(world_size)
    ]


def test_rank_r_holds_rows_r_to_n_of_each_one_process_batch():
    (one,) = _epoch(48, batch_size=12, world_size=1)
    ranks = _epoch(48, batch_size=12, world_size=3)
    assert len(one) == 4 and all(len(batches) == 4 for batches in ranks)
    for step, batch in enumerate(one):
        for rank in range(3):
            assert ranks[rank][step] == batch[rank::3]


def test_a_split_that_n_does_not_divide_repeats_the_first_samples_of_the_order():
    (one,) = _epoch(33, batch_size=8, world_size=1)
    ranks = _epoch(33, batch_size=8, world_size=2)
    order = [index for batch in one for index in batch]
    assert sorted(order) == list(range(33))
    # 2 processes: 34 samples, the order's first one again at the end (rank 1's last batch).
    seen = [
        index
        for step in range(len(ranks[0]))
        for pair in zip(*(ranks[rank][step] for rank in range(2)))
        for index in pair
    ]
    assert len(seen) == 34
    assert seen == order + order[:1]
