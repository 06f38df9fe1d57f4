"""The forward-pass memory estimate: a hand-worked count, and a lower bound of what a real pass holds."""

from __future__ import annotations

import ctypes
import sys

import pytest
import torch
from torch import nn

from sepconv.analysis.memory import forward_bytes, largest_call_bytes


def small_model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(inplace=True), nn.Conv2d(8, 16, 3)).eval()


def test_the_largest_call_is_counted_by_hand():
    # Input (8, 1, 64, 64). conv 1 returns 8x8x62x62 float32 (984,064 B) from the model's input, which
    # is not counted; the in-place ReLU returns its argument (no new memory); conv 2 holds its
    # argument (984,064 B) and returns 8x16x60x60 (1,843,200 B): 2,827,264 B, the largest call.
    assert largest_call_bytes(small_model(), (8, 1, 64, 64)) == 984_064 + 1_843_200
    assert forward_bytes(small_model(), (8, 1, 64, 64)) == 8 * 64 * 64 * 4 + 984_064 + 1_843_200


def test_views_identities_and_the_dtype():
    # Flatten returns a view, Identity its argument: only the conv's output is new memory.
    model = nn.Sequential(nn.Identity(), nn.Conv2d(2, 4, 1), nn.Flatten()).eval()
    assert largest_call_bytes(model, (3, 2, 5, 5)) == 3 * 4 * 5 * 5 * 4
    assert largest_call_bytes(model.double(), (3, 2, 5, 5)) == 3 * 4 * 5 * 5 * 8
    # The estimate scales with the batch exactly: it is a shape count.
    assert largest_call_bytes(model, (3000, 2, 5, 5)) == 1000 * largest_call_bytes(model, (3, 2, 5, 5))


def test_a_model_that_cannot_run_on_meta_counts_its_input_alone():
    class DataDependent(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2 if float(x.sum()) > 0 else x  # .item() has no value on the meta device

    assert largest_call_bytes(DataDependent(), (2, 3)) == 0
    assert forward_bytes(DataDependent(), (2, 3)) == 2 * 3 * 4


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallinfo2 measures the heap")
def test_the_estimate_is_a_lower_bound_of_a_measured_forward_pass():
    class MallInfo(ctypes.Structure):
        names = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
        _fields_ = [(name, ctypes.c_size_t) for name in names.split()]

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = MallInfo
    except (OSError, AttributeError):
        pytest.skip("no glibc >= 2.33")

    def in_use() -> int:
        info = libc.mallinfo2()
        return info.uordblks + info.hblkhd  # heap blocks and mmapped blocks in use

    model, shape = small_model(), (8, 1, 64, 64)
    images = torch.randn(shape)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # no per-thread scratch buffers in the measurement
    try:
        with torch.no_grad():
            model(images)  # first-call allocations (kernels' caches) happen before the baseline
        seen: list[int] = []
        for module in model.modules():
            module.register_forward_hook(lambda *_: seen.append(in_use()))
        baseline = in_use()  # the input is already allocated, as forward_bytes assumes
        with torch.no_grad():
            model(images)
    finally:
        torch.set_num_threads(threads)
    measured = max(seen) - baseline
    assert largest_call_bytes(model, shape) <= measured
