"""Keep freed tensor memory in the process while training, so each step does not fault it in again.

Why: glibc hands large blocks straight back to the kernel when they are freed (blocks above its mmap
threshold are unmapped, and free space at the top of the heap is trimmed). A training step frees its
activations and gradients at the end and allocates them again in the next step, so the kernel must
map and zero them again: on the 2-core AVX2 machine of issue 25, the demo's separable twin took
14,550 page faults per step at batch 64 (about 57 MB), 42 ms of kernel time. That is more than a third
of its 95 ms wall time. With the heap kept, the faults went to 0 and the step to 61 ms.

:func:`kept_heap` raises both glibc thresholds for the duration of a run, then gives the free memory
back (``malloc_trim``) and leaves the thresholds where glibc's own adaptive rule would have taken them
in a process that frees large tensors (see ``_AFTER_*``). A no-op where the C library is not glibc
(musl, macOS, Windows). The memory the process holds at the peak of a step is unchanged; between
steps it keeps what it freed instead of returning it.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import sys
from collections.abc import Iterator
from typing import Any

__all__ = ["kept_heap"]

# mallopt parameters (<malloc.h>).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
# After a run. Setting either threshold turns glibc's adaptive rule off for good (it raises the mmap
# threshold to the size of each large block freed, up to 32 MiB on 64-bit, with the trim threshold at
# twice that), so restoring the 128 KiB start-up values would map and zero every block above 128 KiB
# afresh: measured, 54,793 page faults per separable-twin step after a fit, against 0-15,000 before.
# These are the values the adaptive rule reaches in a process that frees large tensors.
_AFTER_MMAP_THRESHOLD = 32 * 2**20
_AFTER_TRIM_THRESHOLD = 64 * 2**20
# Blocks up to 1 GiB come from the heap, and up to 2 GiB of free heap stays mapped (C int limits).
_KEPT_MMAP_THRESHOLD = 2**30
_KEPT_TRIM_THRESHOLD = 2**31 - 1


@functools.cache
def _glibc() -> Any | None:
    """The C library when it is glibc (it has ``mallopt`` and ``malloc_trim``), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.malloc_trim.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


_depth = 0  # nested runs (a run inside a run's callback) keep the heap until the outermost ends


@contextlib.contextmanager
def kept_heap() -> Iterator[bool]:
    """Within the block, freed memory stays in the process for reuse; yields whether that applies here.

    On exit the free memory is returned to the system (``malloc_trim``) and the thresholds are left at
    32 MiB (mmap) and 64 MiB (trim), the most glibc's adaptive rule would have raised them to, since
    the rule cannot be turned back on: blocks up to 32 MiB are then reused, larger ones mapped afresh.
    """
    global _depth
    libc = _glibc()
    if libc is None:
        yield False
        return
    if _depth == 0:
        libc.mallopt(_M_MMAP_THRESHOLD, _KEPT_MMAP_THRESHOLD)
        libc.mallopt(_M_TRIM_THRESHOLD, _KEPT_TRIM_THRESHOLD)
    _depth += 1
    try:
        yield True
    finally:
        _depth -= 1
        if _depth == 0:
            libc.mallopt(_M_MMAP_THRESHOLD, _AFTER_MMAP_THRESHOLD)
            libc.mallopt(_M_TRIM_THRESHOLD, _AFTER_TRIM_THRESHOLD)
            libc.malloc_trim(0)
