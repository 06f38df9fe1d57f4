"""Data loaders that can resume in the middle of an epoch, on one process or sharded over many.

The order of an epoch is a pure function of ``(seed, epoch)``, drawn from the sampler's own generator
(never the global RNG), and each process takes every ``world_size``-th index of it: PyTorch's
``DistributedSampler``, which we extend only to start an epoch part-way. The loader's
``state_dict()`` records the epoch and how many batches of it are done, so a run killed mid-epoch and
resumed sees exactly the batches it had not seen yet, in the same order. Lightning saves and restores
that state with the rest of the checkpoint (it treats any loader with ``state_dict`` as resumable).

Random draws made while reading a sample (the training augmentation) come from a generator seeded by
``(seed, epoch, index)`` (:class:`EpochSeededDataset`), not from the global RNG of whichever process or
worker reads it: a resumed run, a run with loader workers and one without all see the same augmented
images, and reading data never moves the RNG that dropout and initialisation draw from.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

__all__ = ["EpochSeededDataset", "ResumableDataLoader", "ShardedEpochSampler", "make_loader"]


class ShardedEpochSampler(DistributedSampler):
    """PyTorch's ``DistributedSampler`` (seeded shuffle, padded, every ``world_size``-th index) that can
    start an epoch part-way: ``start_batch`` batches of the epoch's order are skipped, once.

    >>> sampler = ShardedEpochSampler(list(range(10)), batch_size=2, seed=0, shuffle=False, rank=1, world_size=2)
    >>> list(sampler)
    [1, 3, 5, 7, 9]
    >>> sampler.start_batch = 1
    >>> list(sampler)
    [5, 7, 9]

    With ``keyed=True`` it yields ``(epoch, index)`` keys, for an :class:`EpochSeededDataset`.
    """

    def __init__(
        self,
        dataset: Dataset,
        *,
        batch_size: int,
        seed: int,
        shuffle: bool,
        rank: int = 0,
        world_size: int = 1,
        keyed: bool = False,
    ) -> None:
        if len(dataset) < 1:  # type: ignore[arg-type]
            raise ValueError("cannot sample from an empty data set")
        super().__init__(dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed)
        self.batch_size = batch_size
        self.start_batch = 0
        self.keyed = keyed

    def __iter__(self) -> Iterator[Any]:
        order = list(super().__iter__())
        start, self.start_batch = self.start_batch * self.batch_size, 0
        if self.keyed:
            return iter([(self.epoch, index) for index in order[start:]])
        return iter(order[start:])


class EpochSeededDataset(Dataset):
    """``dataset`` read with ``(epoch, index)`` keys: each read runs under a torch generator seeded by
    ``(seed, epoch, index)``, and the global torch RNG is put back afterwards.

    A sample's augmentation then depends only on the seed, the epoch and the sample, not on the
    process or loader worker that reads it or on what that process drew before; so resuming mid-epoch
    and changing ``num_workers`` do not change the augmented images.

    >>> class Noisy(torch.utils.data.Dataset):
    ...     def __len__(self): return 2
    ...     def __getitem__(self, index): return torch.rand(1).item()
    >>> data = EpochSeededDataset(Noisy(), seed=7)
    >>> data[0, 1] == data[0, 1] != data[1, 1]
    True
    """

    def __init__(self, dataset: Dataset, *, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        # SeedSequence mixes the three numbers into well-spread generator seeds (nearby keys do not
        # give correlated streams, as seed + epoch + index would).
        sample_seed = int(np.random.SeedSequence([self.seed, epoch, index]).generate_state(1, np.uint64)[0])
        # Only the CPU generator is reseeded (torch.manual_seed would reseed every GPU's too, and
        # fork_rng(devices=[]) puts back the CPU's alone).
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(sample_seed)
            return self.dataset[index]

    def __getitems__(self, keys: Sequence[tuple[int, int]]) -> list[Any]:
        """The samples of ``keys``, as ``[self[key] for key in keys]`` gives them. A data set that says its
        reads draw nothing (``draws_random`` False: no augmentation) needs no seeding, so a batch is
        read at once through its own ``__getitems__``."""
        getitems = getattr(self.dataset, "__getitems__", None)
        if getattr(self.dataset, "draws_random", True) is False and getitems is not None:
            return list(getitems([index for _, index in keys]))
        return [self[key] for key in keys]


class ResumableDataLoader(DataLoader):
    """A ``DataLoader`` over a :class:`ShardedEpochSampler` whose position survives a checkpoint.

    ``batches_done`` is set by the trainer after each optimizer step; ``state_dict()`` stores it with the
    epoch, and ``load_state_dict()`` makes the next iteration skip the batches already trained on.
    """

    sampler: ShardedEpochSampler

    def __init__(self, dataset: Dataset, sampler: ShardedEpochSampler, *, num_workers: int = 0) -> None:
        super().__init__(
            dataset,
            batch_size=sampler.batch_size,
            sampler=sampler,
            num_workers=num_workers,
            # A private generator: creating an iterator must not draw from the global RNG, or a resumed
            # run would see a different dropout stream than the uninterrupted one.
            generator=torch.Generator().manual_seed(sampler.seed),
            persistent_workers=num_workers > 0,
        )
        self.batches_done = 0

    def state_dict(self) -> dict[str, Any]:
        """The epoch and how many of its batches were served: what a resumed run needs to continue."""
        return {"epoch": self.sampler.epoch, "batches_done": self.batches_done}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state``: the same epoch's order, skipping the batches already served."""
        self.sampler.set_epoch(int(state["epoch"]))
        self.sampler.start_batch = int(state["batches_done"])
        self.batches_done = int(state["batches_done"])


def make_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    seed: int,
    shuffle: bool,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
) -> ResumableDataLoader:
    """A resumable loader of ``dataset`` for process ``rank`` of ``world_size``; ``batch_size`` per process."""
    sampler = ShardedEpochSampler(
        dataset,
        batch_size=batch_size,
        seed=seed,
        shuffle=shuffle,
        rank=rank,
        world_size=world_size,
        keyed=True,
    )
    return ResumableDataLoader(EpochSeededDataset(dataset, seed=seed), sampler, num_workers=num_workers)
