"""The receptive-field map refuses an image whose forward pass cannot fit, before running the model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import sepconv.machine
from sepconv.machine import MemoryLimitError
from sepconv.viz.fields import effective_receptive_field


def test_an_image_too_large_for_the_memory_is_refused_before_the_forward_pass(monkeypatch):
    conv = nn.Conv2d(1, 4, 3, padding=1)
    calls = []
    # Real passes only: the estimate's pass on the meta device (a copy, hooks included) computes nothing.
    conv.register_forward_hook(lambda module, args, output: calls.append(output.device.type))
    # 1x1x64x64 float32 image (16,384 B) and the conv's 1x4x64x64 output (65,536 B).
    needed = 16_384 + 65_536
    monkeypatch.setattr(sepconv.machine, "available_memory_bytes", lambda: needed - 1)
    with pytest.raises(MemoryLimitError, match=r"^inputs=1x1x64x64 needs about 80\.0 KiB for a forward pass"):
        effective_receptive_field(nn.Sequential(conv), "0", torch.randn(1, 64, 64))
    assert calls == ["meta"]
    monkeypatch.setattr(sepconv.machine, "available_memory_bytes", lambda: needed)
    assert effective_receptive_field(nn.Sequential(conv), "0", torch.randn(1, 64, 64)).theoretical.height == 3
