"""bench's memory check: the estimate counted by hand, and batch or input sizes refused before any input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import sepconv.machine
from sepconv.deploy.bench import benchmark_paths, memory_estimate_bytes
from sepconv.machine import MemoryLimitError


def model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())


def test_the_estimate_counts_inputs_their_channels_last_copies_and_the_largest_layer():
    # Batches 2 and 5 of 3x10x10 float32: 7 images of 1,200 B, held NCHW and once more per
    # channels_last path (2 copies); the largest call is the pooling at batch 5, holding the conv's
    # 5x8x10x10 float32 output (16,000 B) while it returns 5x8x1x1 (160 B).
    paths = ["eager", "channels_last", "folded_channels_last", "onnx_fp32"]
    assert memory_estimate_bytes(model(), (3, 10, 10), [2, 5], paths) == 7 * 1200 * 3 + 16_000 + 160
    # One channel: a channels_last copy is the same layout, no copy is made.
    assert memory_estimate_bytes(nn.Conv2d(1, 8, 3, padding=1), (1, 10, 10), [2, 5], paths) == (
        7 * 400 + 5 * 8 * 100 * 4
    )


def test_batch_sizes_beyond_the_memory_are_refused_before_any_input(monkeypatch):
    needed = memory_estimate_bytes(model(), (3, 10, 10), [2, 5], ["eager"])
    monkeypatch.setattr(sepconv.machine, "available_memory_bytes", lambda: needed - 1)
    made = []
    monkeypatch.setattr(torch, "randn", lambda *args, **kwargs: made.append(args))
    with pytest.raises(MemoryLimitError, match=r"^batch_sizes=2,5 needs about .* more than the .* available"):
        benchmark_paths(model(), input_size=(3, 10, 10), batch_sizes=[2, 5], paths=["eager"])
    assert made == []


def test_an_input_size_that_cannot_fit_one_image_is_named(monkeypatch):
    monkeypatch.setattr(sepconv.machine, "available_memory_bytes", lambda: 2**20)
    with pytest.raises(MemoryLimitError, match=r"^input_size=3,1000,1000 needs about 42\.0 MiB"):
        # 3x1000x1000 float32 (12 MB), the conv's 8x1000x1000 output (32 MB) and the pooled 32 B at
        # batch 1: 44,000,032 B.
        benchmark_paths(model(), input_size=(3, 1000, 1000), batch_sizes=[1, 4], paths=["eager"])
