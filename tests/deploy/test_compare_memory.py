"""compare's memory check: the estimate counted by hand, and each scaling parameter named when refused."""

from __future__ import annotations

import pytest
from torch import nn

import sepconv.machine
from sepconv.deploy.compare import compare_models, memory_estimate_bytes
from sepconv.machine import MemoryLimitError


def models() -> tuple[nn.Module, nn.Module]:
    return nn.Sequential(nn.Conv2d(2, 4, 3), nn.Flatten()), nn.Sequential(nn.Conv2d(2, 6, 1), nn.Flatten())


def test_the_estimate_counts_images_and_the_larger_models_largest_layer():
    # 2x5x5 float32 images are 200 B: 3 timing images and 10 random agreement images; at batch 3, A's
    # conv returns 3x4x3x3 (432 B) and B's 3x6x5x5 (1,800 B), the larger one counts.
    assert memory_estimate_bytes(models(), (2, 5, 5), 3, 10) == 200 * 13 + 1800


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"input_size": (2, 500, 500), "batch_size": 2, "samples": 1}, "input_size=2,500,500"),
        ({"input_size": (2, 5, 5), "batch_size": 2, "samples": 10**6}, "samples=1000000"),
        ({"input_size": (2, 5, 5), "batch_size": 10**6, "samples": 1}, "batch_size=1000000"),
    ],
)
def test_the_parameter_that_does_not_fit_is_named(monkeypatch, arguments, named):
    monkeypatch.setattr(sepconv.machine, "available_memory_bytes", lambda: 2**20)
    with pytest.raises(MemoryLimitError, match=rf"^{named} needs about .* more than the 1\.0 MiB"):
        compare_models(*models(), **arguments)
