"""Dropout whose masks do not depend on how the global batch is split between processes.

With DDP each process would draw a dropout mask for its own share of the batch, so N processes drop
other activations than one process does with the same global batch and seed. Here every process draws
the mask of the *whole* global batch, from the same generator state (every process seeds the same
way and makes the same draws), and keeps the rows of its own samples. Which rows those are follows
from how :func:`sepconv.train.data.make_loader` splits a global batch: global step ``k`` of one
process takes positions ``k * B ... k * B + B - 1`` of the epoch's order; with ``N`` processes, rank
``r`` takes every ``N``-th of them starting at ``r`` (``DistributedSampler``), so its row ``j`` is row
``j * N + r`` of the one-process batch: the rows ``r::N`` of the global mask.

The mask is drawn as PyTorch draws it for ``nn.Dropout`` (same shape, dtype and generator call:
``bernoulli_`` on CPU, the fused ``native_dropout`` kernel on GPUs), so the rows are bit for bit those
of the one-process run, and the generator advances as it does there. Each process draws N times the
random numbers it uses, which for a classifier head's dropout is a few thousand numbers per step.

As :mod:`sepconv.train.sync_norm`, the conversion swaps the class of each ``nn.Dropout`` in place (no
new state): :func:`restore_dropout` swaps back. Without a process group, or in eval mode, it is the
plain ``nn.Dropout``.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["KeyedDropout", "keyed_dropout", "restore_dropout", "use_keyed_dropout"]


def keyed_dropout(x: torch.Tensor, p: float, *, rank: int, world_size: int) -> torch.Tensor:
    """``F.dropout(x, p, training=True)`` for rows ``rank::world_size`` of a global batch.

    Draws the mask of a ``(x.shape[0] * world_size, ...)`` batch as ``F.dropout`` would and keeps
    rows ``rank::world_size``: with ``world_size=1`` it is ``F.dropout`` itself, bit for bit.

    >>> generator_state = torch.get_rng_state()
    >>> whole = torch.nn.functional.dropout(torch.ones(4, 3), 0.5)
    >>> torch.set_rng_state(generator_state)
    >>> torch.equal(keyed_dropout(torch.ones(2, 3), 0.5, rank=1, world_size=2), whole[1::2])
    True
    """
    # ATen's dropout, step by step: nothing to do for p = 0 or an empty input, zeros for p = 1.
    if p == 0 or x.numel() == 0:
        return x
    if p == 1:
        return x * torch.zeros((), dtype=x.dtype, device=x.device)
    shape = (x.shape[0] * world_size, *x.shape[1:])
    if x.device.type == "cpu":
        noise = torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(1 - p)[rank::world_size]
        noise.div_(1 - p)
        return x * noise
    # GPUs run the fused kernel (one Philox draw per element of the whole tensor): draw its mask for
    # the global shape. (x * mask) is exact, and the product by the scale rounds as the kernel does.
    _, mask = torch.native_dropout(torch.ones(shape, dtype=x.dtype, device=x.device), p, True)
    return x * mask[rank::world_size] * (1.0 / (1 - p))


class KeyedDropout(nn.Dropout):
    """``nn.Dropout`` whose training-mode mask is the global batch's (see the module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``nn.Dropout``; in training under DDP, with this rank's rows of the global batch's mask."""
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(x)
        return keyed_dropout(x, self.p, rank=dist.get_rank(), world_size=dist.get_world_size())


def use_keyed_dropout(model: nn.Module) -> int:
    """Make every plain ``nn.Dropout`` of ``model`` a :class:`KeyedDropout`, in place; returns how many."""
    converted = 0
    for module in model.modules():
        if type(module) is nn.Dropout:
            module.__class__ = KeyedDropout
            converted += 1
    return converted


def restore_dropout(model: nn.Module) -> None:
    """Undo :func:`use_keyed_dropout` (the model then pickles and exports as plain PyTorch)."""
    for module in model.modules():
        if type(module) is KeyedDropout:
            module.__class__ = nn.Dropout  # type: ignore[assignment]  # mypy cannot follow a class change
