"""sepconv.machine: core and memory figures against /proc and the affinity mask, and the memory check."""

import os
from pathlib import Path

import pytest

from sepconv import machine


def test_usable_cpu_count_is_the_affinity_mask_unless_a_quota_is_lower(monkeypatch, tmp_path):
    monkeypatch.setattr(machine, "_CGROUP", tmp_path)
    assert machine.usable_cpu_count() == len(os.sched_getaffinity(0))
    (tmp_path / "cpu.max").write_text("50000 100000\n")  # half a core: rounds up to one
    assert machine.usable_cpu_count() == 1
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert machine.usable_cpu_count() == len(os.sched_getaffinity(0))


def test_available_memory_is_meminfo_capped_by_the_cgroup_limit(monkeypatch, tmp_path):
    monkeypatch.setattr(machine, "_CGROUP", tmp_path)
    meminfo = {
        line.split(":")[0]: int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
    }
    available = machine.available_memory_bytes()
    # MemAvailable moves while the test runs; a 20% band is far wider than two reads a moment apart.
    assert available == pytest.approx(meminfo["MemAvailable"] * 1024, rel=0.2)
    (tmp_path / "memory.max").write_text(str(3 * 2**30))
    (tmp_path / "memory.current").write_text(str(2**30))
    assert machine.available_memory_bytes() == 2 * 2**30


def test_require_memory_names_the_parameter_the_estimate_and_the_limit(monkeypatch):
    monkeypatch.setattr(machine, "available_memory_bytes", lambda: 4 * 2**30)
    machine.require_memory("batch_size", 64, 4 * 2**30)  # exactly what is there: allowed
    with pytest.raises(machine.MemoryLimitError) as caught:
        machine.require_memory("batch_size", 100000, 6 * 2**30, what="activations")
    assert str(caught.value) == (
        "batch_size=100000 needs about 6.0 GiB for activations, more than the 4.0 GiB of memory "
        "available on this machine; use a smaller batch_size"
    )
    assert isinstance(caught.value, ValueError)
    monkeypatch.setattr(machine, "available_memory_bytes", lambda: None)
    machine.require_memory("batch_size", 10**9, 2.0**80)  # nothing known: no refusal
