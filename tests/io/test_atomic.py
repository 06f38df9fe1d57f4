"""Atomic writes: the new file replaces the old one whole, or the old one stays; no temporary files left."""

import pytest

from sepconv.io import atomic_write_bytes


def test_atomic_write_replaces_and_leaves_no_temporary_files(tmp_path):
    target = tmp_path / "nested" / "file.bin"
    atomic_write_bytes(target, b"first")
    atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second"
    assert [path.name for path in target.parent.iterdir()] == ["file.bin"]


def test_failed_atomic_write_keeps_the_old_file(tmp_path):
    target = atomic_write_bytes(tmp_path / "file.bin", b"good")
    with pytest.raises(TypeError):
        atomic_write_bytes(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"good"
    assert [path.name for path in tmp_path.iterdir()] == ["file.bin"]
