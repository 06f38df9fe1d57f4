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


@pytest.mark.parametrize(
    ("probes", "native_bf16"),
    [
        ({"_is_avx512_bf16_supported": True, "_is_amx_tile_supported": False}, True),
        ({"_is_avx512_bf16_supported": False, "_is_amx_tile_supported": True}, True),
        ({"_is_avx512_bf16_supported": False, "_is_amx_tile_supported": False}, False),
    ],
)
def test_cpu_features_are_torchs_probes_and_native_bf16_is_avx512_bf16_or_amx(
    monkeypatch, probes, native_bf16
):
    torch = pytest.importorskip("torch")
    probes = {"_is_avx2_supported": True, "_is_avx512_supported": False, "_is_vnni_supported": True, **probes}
    for probe, answer in probes.items():
        monkeypatch.setattr(torch.cpu, probe, lambda answer=answer: answer, raising=False)
    features = machine.cpu_features()
    assert features == machine.CpuFeatures(
        avx2=True,
        avx512=False,
        vnni=True,
        avx512_bf16=probes["_is_avx512_bf16_supported"],
        amx_tile=probes["_is_amx_tile_supported"],
    )
    assert features.native_bf16 is native_bf16 and machine.cpu_has_native_bf16() is native_bf16
    assert features.to_dict()["native_bf16"] is native_bf16


def test_a_probe_missing_from_torch_counts_as_absent(monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    assert machine.cpu_features().amx_tile is False
    assert machine.cpu_has_native_bf16() is False
