"""kept_heap: while training, freed tensor memory is reused instead of being faulted in again.

The references are worked by hand: a 40 MiB block is above glibc's largest adaptive mmap threshold
(32 MiB), so by default every allocation of it is mapped afresh and writing it faults in
40 MiB / 4 KiB = 10,240 pages (20 where the kernel backs it with 2 MiB pages). Inside ``kept_heap`` the
block comes back from the heap once glibc has settled: none of its pages is faulted in again. Five
such blocks freed inside stay resident (200 MiB) until the block ends, then go back to the system.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sepconv.train import heap

_SCRIPT = """
import json, os, resource, torch
from sepconv.train.heap import kept_heap

ELEMENTS = 10 * 2**20  # 40 MiB of float32
SMALL = 4 * 2**20  # 16 MiB: below the 32 MiB mmap threshold left after a run


def faults_per_allocation(repeats=5, elements=ELEMENTS):
    # glibc settles first: the small allocations made between blocks take their place in the heap
    # (here within 6 blocks), after which every block reuses the one freed before it.
    for _ in range(20):
        torch.ones(elements)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(repeats):
        torch.ones(elements)
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / repeats


def resident_mib():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


outside = faults_per_allocation()
base = resident_mib()
with kept_heap() as applies:
    inside = faults_per_allocation()
    blocks = [torch.ones(ELEMENTS) for _ in range(5)]
    del blocks
    held = resident_mib()
after = resident_mib()
after_small = faults_per_allocation(elements=SMALL)
print(json.dumps({"applies": applies, "outside": outside, "inside": inside, "base": base, "held": held,
                  "after": after, "after_small": after_small}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator, Linux only")
def test_freed_memory_is_reused_inside_and_returned_after():
    # A fresh process: the allocator's state is the test's own, not what earlier tests left.
    done = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.splitlines()[-1])
    if not result["applies"]:
        pytest.skip("the C library is not glibc")
    assert result["outside"] >= 40 * 2**20 / (2 * 2**20)  # at least one fault per 2 MiB page
    # No block is faulted in again; Python's own small allocations may fault a few pages.
    assert result["inside"] <= result["outside"] / 100
    # The five freed 40 MiB blocks stay resident inside, and are given back on leaving. The rest of the
    # process may shrink a little between the readings (Python frees small objects): 1 MiB for that.
    assert result["held"] - result["base"] >= 5 * 40 - 1
    assert result["after"] - result["base"] < 40
    # Afterwards glibc behaves as its adaptive rule would have settled: blocks up to 32 MiB are reused
    # (with glibc's start-up 128 KiB, each would be mapped and zeroed again: 4,096 faults). Larger ones
    # are mapped afresh unless a free block of the heap fits them, which depends on fragmentation.
    assert result["after_small"] <= result["outside"] / 100


def test_without_glibc_it_changes_nothing_and_says_so(monkeypatch):
    monkeypatch.setattr(heap, "_glibc", lambda: None)
    with heap.kept_heap() as applies:
        assert applies is False
        assert heap._depth == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator, Linux only")
def test_nested_runs_keep_the_heap_until_the_outermost_ends(monkeypatch):
    calls: list[tuple[str, int, int]] = []

    class Recorder:
        def mallopt(self, parameter: int, value: int) -> int:
            calls.append(("mallopt", parameter, value))
            return 1

        def malloc_trim(self, pad: int) -> int:
            calls.append(("malloc_trim", pad, 0))
            return 1

    monkeypatch.setattr(heap, "_glibc", lambda: Recorder())
    with heap.kept_heap(), heap.kept_heap():
        assert calls == [("mallopt", -3, 2**30), ("mallopt", -1, 2**31 - 1)]
    assert calls[2:] == [("mallopt", -3, 32 * 2**20), ("mallopt", -1, 64 * 2**20), ("malloc_trim", 0, 0)]
