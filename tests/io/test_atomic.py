"""Atomic writes: the new file replaces the old one whole, or the old one stays; no temporary files left."""

import errno
import os
import socket
import stat

import pytest

from sepconv.io import atomic_write_bytes
from sepconv.io.atomic import OutputPathError, check_output_path


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


# --- never replace what is not a regular file (issue 20) -------------------------------------------


def test_a_fifo_is_refused_and_stays_a_fifo(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(OutputPathError, match=r"'.*pipe\.png' is a FIFO \(named pipe\), not a regular file"):
        atomic_write_bytes(fifo, b"data")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["pipe.png"]  # no temporary file left


def test_a_folder_is_refused_and_kept(tmp_path):
    folder = tmp_path / "out.bin"
    folder.mkdir()
    (folder / "inside").write_bytes(b"kept")
    with pytest.raises(OutputPathError, match=r"out\.bin' is a folder, not a regular file"):
        atomic_write_bytes(folder, b"data")
    assert folder.is_dir() and (folder / "inside").read_bytes() == b"kept"


def test_a_socket_is_refused(tmp_path):
    path = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        with pytest.raises(OutputPathError, match="is a socket"):
            atomic_write_bytes(path, b"data")
        assert stat.S_ISSOCK(os.lstat(path).st_mode)


def test_check_output_path_names_the_parameter_and_what_is_there(tmp_path):
    fifo = tmp_path / "f"
    os.mkfifo(fifo)
    with pytest.raises(OutputPathError) as caught:
        check_output_path(fifo, parameter="--confusion-png")
    assert str(caught.value) == (
        f"--confusion-png {str(fifo)!r} is a FIFO (named pipe), not a regular file; sepconv writes only "
        "regular files (an existing one is replaced): choose a file path"
    )
    assert isinstance(caught.value, ValueError)  # the CLI's one-line errors
    assert check_output_path(tmp_path / "new.png") == tmp_path / "new.png"


def test_a_symbolic_link_is_written_through_and_stays_a_link(tmp_path):
    real = tmp_path / "real.bin"
    real.write_bytes(b"old")
    link = tmp_path / "link.bin"
    link.symlink_to(real)
    assert atomic_write_bytes(link, b"new") == link
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_bytes() == b"new"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["link.bin", "real.bin"]


def test_a_link_to_a_fifo_or_to_nothing_is_refused(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    to_fifo = tmp_path / "to-fifo"
    to_fifo.symlink_to(fifo)
    with pytest.raises(OutputPathError, match=r"to-fifo' \(a symbolic link to '.*pipe'\) is a FIFO"):
        atomic_write_bytes(to_fifo, b"data")
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "missing")
    with pytest.raises(OutputPathError, match="is a symbolic link to a missing path"):
        atomic_write_bytes(dangling, b"data")
    assert to_fifo.is_symlink() and stat.S_ISFIFO(os.stat(to_fifo).st_mode)
    assert dangling.is_symlink() and not (tmp_path / "missing").exists()


def test_a_permission_error_names_the_users_path_not_the_temporary_file(tmp_path, monkeypatch):
    target = tmp_path / "model.safetensors"
    real_open = os.open

    def refuse_temporary_files(path, *args, **kwargs):
        if str(path).endswith(".tmp"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    # Root ignores a read-only folder, so the refusal is simulated where the write meets it.
    monkeypatch.setattr(os, "open", refuse_temporary_files)
    with pytest.raises(PermissionError) as caught:
        atomic_write_bytes(target, b"data")
    assert str(caught.value) == f"[Errno 13] cannot write {str(target)!r}: Permission denied"
    assert ".tmp" not in str(caught.value) and caught.value.errno == errno.EACCES
    assert list(tmp_path.iterdir()) == []
