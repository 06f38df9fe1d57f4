"""What this machine is and can give a run: CPU instruction sets, usable cores, available memory, GPUs.

Flags that scale work or memory (``--devices``, batch sizes, input sizes, ranks, animation geometry) are
checked against these figures *before* the big allocation, so that a mistyped ``--batch-sizes 100000``
costs one line instead of the machine. The figures honour the limits a container or a job scheduler
sets (CPU affinity, cgroup v2 ``cpu.max`` and ``memory.max``), which ``os.cpu_count()`` and the
system's total memory do not.

The CPU's instruction sets (:func:`cpu_features`) decide which execution paths are worth running: the
precision rule of training, ``sepconv bench``'s bf16 path and the keys of measured costs all ask here,
so that one probe answers them all.

This module imports neither torch nor numpy: the command line uses it before any heavy import. The
probes that need torch (GPUs, instruction sets) import it when called.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from sepconv.errors import ParameterError
from sepconv.formatting import format_bytes  # re-exported: memory refusals took it from here first

__all__ = [
    "CpuFeatures",
    "MemoryLimitError",
    "available_memory_bytes",
    "cpu_features",
    "cpu_has_native_bf16",
    "cpu_model_name",
    "format_bytes",
    "gpu_count",
    "require_memory",
    "usable_cpu_count",
]

_CGROUP = Path("/sys/fs/cgroup")


def usable_cpu_count() -> int:
    """CPU cores this process may run on: its affinity mask, capped by a cgroup v2 CPU quota.

    >>> usable_cpu_count() >= 1
    True
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity call
        cores = os.cpu_count() or 1
    quota = _read_text(_CGROUP / "cpu.max")
    if quota:
        limit, _, period = quota.partition(" ")
        if limit != "max" and period:
            with contextlib.suppress(ValueError):  # a malformed file: keep the affinity count
                cores = min(cores, max(1, math.ceil(int(limit) / int(period))))
    return max(1, cores)


def available_memory_bytes() -> int | None:
    """Memory a new allocation can have without swapping: ``MemAvailable``, capped by a cgroup v2 limit.

    None where the system does not say (not Linux); callers then skip their memory checks.
    """
    available: int | None = None
    for line in (_read_text(Path("/proc/meminfo")) or "").splitlines():
        if line.startswith("MemAvailable:"):
            available = int(line.split()[1]) * 1024
            break
    limit, used = _read_text(_CGROUP / "memory.max"), _read_text(_CGROUP / "memory.current")
    if limit and limit != "max" and used:
        try:
            room = max(0, int(limit) - int(used))
        except ValueError:
            return available
        available = room if available is None else min(available, room)
    return available


def gpu_count() -> int:
    """CUDA GPUs visible to PyTorch (0 without torch's CUDA support); imports torch only when called."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@dataclass(frozen=True)
class CpuFeatures:
    """The instruction sets of this CPU that change which execution is fastest.

    ``avx512_bf16`` and ``amx_tile`` compute bf16 in hardware (:attr:`native_bf16`); without them
    PyTorch emulates bf16, slower than float32. ``vnni`` (AVX512-VNNI) speeds up int8 dot products,
    ``amx_tile`` bf16 and int8 matrix tiles.
    """

    avx2: bool = False
    avx512: bool = False
    vnni: bool = False
    avx512_bf16: bool = False
    amx_tile: bool = False

    @property
    def native_bf16(self) -> bool:
        """True when bf16 arithmetic runs in hardware (AVX512-BF16 or AMX tiles)."""
        return self.avx512_bf16 or self.amx_tile

    def to_dict(self) -> dict[str, bool]:
        """Every feature flag by name, and ``native_bf16``, as JSON-able booleans."""
        return {**asdict(self), "native_bf16": self.native_bf16}


# CpuFeatures field -> the torch.cpu probe that answers it (cpuinfo, as PyTorch's own kernels dispatch).
_TORCH_PROBES = {
    "avx2": "_is_avx2_supported",
    "avx512": "_is_avx512_supported",
    "vnni": "_is_vnni_supported",
    "avx512_bf16": "_is_avx512_bf16_supported",
    "amx_tile": "_is_amx_tile_supported",
}


def cpu_features() -> CpuFeatures:
    """This CPU's instruction sets, as PyTorch detects them (imports torch when called).

    PyTorch's own probe is asked rather than ``/proc/cpuinfo``: what matters is what its kernels will
    use, and it answers on every operating system. A probe a torch version lacks counts as absent.
    """
    import torch

    return CpuFeatures(
        **{field: bool(getattr(torch.cpu, probe, lambda: False)()) for field, probe in _TORCH_PROBES.items()}
    )


def cpu_model_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``'s ``model name``, else the platform's processor string).

    Two CPUs with the same instruction sets can still differ in speed (cache sizes, clocks), so the
    keys of measured costs hold the name as well as :func:`cpu_features`. ``"unknown"`` where neither
    source says.

    >>> isinstance(cpu_model_name(), str)
    True
    """
    import platform

    for line in (_read_text(Path("/proc/cpuinfo")) or "").splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            return value.strip()
    return platform.processor() or "unknown"


def cpu_summary() -> str:
    """One line naming the CPU and the instruction sets that decide which execution is fastest, for
    every figure a benchmark prints (a timing means little without the ISA it was taken on)."""
    features = cpu_features()
    names = (
        ("AVX2", features.avx2),
        ("AVX-512", features.avx512),
        ("VNNI", features.vnni),
        ("AVX512-BF16", features.avx512_bf16),
        ("AMX", features.amx_tile),
    )
    isa = ", ".join(name for name, present in names if present) or "no AVX2"
    return f"{cpu_model_name()} ({isa}; {'native' if features.native_bf16 else 'no native'} bf16)"


def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bf16 in hardware (AVX512-BF16 or AMX tiles)."""
    return cpu_features().native_bf16


class MemoryLimitError(ParameterError):
    """A parameter whose value would need more memory than this machine has available (``.param`` names it)."""


def require_memory(parameter: str, value: object, needed_bytes: float, *, what: str = "") -> None:
    """Refuse ``parameter=value`` when it needs more than the memory available now.

    ``needed_bytes`` is the caller's estimate of the allocation the value leads to (a lower bound is
    enough: the check exists to stop values that cannot fit, not to predict a peak). The message names
    the parameter, the value, the estimate and the limit, so that the command line can print it as is.

    >>> require_memory("batch_size", 8, 1024)
    >>> require_memory("batch_size", 10**9, 2.0**80, what="input tensors")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    sepconv.machine.MemoryLimitError: batch_size=1000000000 needs about ... for input tensors, more than ...
    """
    available = available_memory_bytes()
    if available is None or needed_bytes <= available:
        return
    purpose = f" for {what}" if what else ""
    raise MemoryLimitError(
        f"{parameter}={value} needs about {format_bytes(needed_bytes)}{purpose}, more than the "
        f"{format_bytes(available)} of memory available on this machine; use a smaller {parameter}",
        param=parameter,
        mentions=(parameter,),
    )


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None
