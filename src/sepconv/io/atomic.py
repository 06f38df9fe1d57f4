"""Atomic file writes: a reader sees the old file or the new one, never half of one; and only files.

Every file sepconv writes that another process may read (model files, training state, logs, pictures,
reports) goes through :func:`atomic_write_bytes`, so a process killed mid-write leaves the previous
file intact.

An atomic write renames a new file over the path, which would turn whatever is there into a regular
file: a device (as root, ``--confusion-png /dev/full`` destroyed the system's ``/dev/full``), a FIFO, a
socket. :func:`check_output_path` refuses those (and folders) in one line naming the path and what it
is; every write, and every output flag of the ``sepconv`` command before any work, goes through it.

Symbolic links are written *through*: the new file replaces the regular file the link points to (the
link stays a link, as with ``cp`` or a shell's ``>``), and the same rule applies to that target. A link
that points nowhere (dangling), or at something that is not a regular file, is refused.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from pathlib import Path

from sepconv.errors import SepconvError

__all__ = ["OutputPathError", "PathLike", "atomic_write_bytes", "check_output_path", "non_regular_kind"]

#: A path as a string or an ``os.PathLike``.
PathLike = str | os.PathLike[str]

# What a path that is not a regular file is, in words (stat's file-type tests).
_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
)


class OutputPathError(SepconvError, ValueError):
    """An output path sepconv will not write: something other than a regular file is there."""


def non_regular_kind(path: PathLike) -> str | None:
    """What is at ``path`` when it is not a regular file ("a folder", "a FIFO (named pipe)", ...), else None.

    None for a regular file and for a path where nothing exists. Follows symbolic links (a dangling
    one is "a symbolic link to a missing path").
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "a symbolic link to a missing path" if os.path.islink(path) else None
    except NotADirectoryError:
        return None  # a parent is a file: the write itself names that
    if stat.S_ISREG(mode):
        return None
    return next((kind for test, kind in _KINDS if test(mode)), "not a regular file")


def check_output_path(path: PathLike, *, parameter: str = "path") -> Path:
    """The regular file to write for ``path``; :class:`OutputPathError` when something else is there.

    Refuses an existing folder, device, FIFO or socket (an atomic write would replace it with a file),
    naming ``parameter`` (the argument or flag), the path and what is there. For a symbolic link,
    returns the file it points to (written through, the link kept), checked the same way.

    >>> check_output_path("/dev/null", parameter="--out")
    Traceback (most recent call last):
    sepconv.io.atomic.OutputPathError: --out '/dev/null' is a character device, not a regular file; sepconv writes only regular files (an existing one is replaced): choose a file path
    """
    target = Path(path)
    kind = non_regular_kind(target)
    if kind is not None:
        through = f" (a symbolic link to {os.path.realpath(target)!r})" if target.is_symlink() else ""
        raise OutputPathError(
            f"{parameter} {os.fspath(path)!r}{through} is {kind}, not a regular file; sepconv writes only "
            "regular files (an existing one is replaced): choose a file path"
        )
    return Path(os.path.realpath(target)) if target.is_symlink() else target


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a mix.

    Refuses a path where something other than a regular file exists (:func:`check_output_path`; a
    symbolic link is written through to its regular-file target). Writes a temporary file in the same
    folder, flushes and fsyncs it, renames it over the file (``os.replace`` is atomic on one file
    system) and fsyncs the folder so the rename survives a crash. Creates missing parent folders. An
    ``OSError`` (permission denied, disk full) names ``path``, not the temporary file. Returns ``path``.
    """
    given = Path(path)
    target = check_output_path(given)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
        descriptor = os.open(temporary, flags, 0o666)
    except OSError as error:
        raise _naming(error, given) from None
    try:
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, target)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise _naming(error, given) from None
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_folder(target.parent)
    return given


def _naming(error: OSError, path: Path) -> OSError:
    """``error`` (same type and errno) about ``path``: the user's path, not our temporary file's name."""
    reason = error.strerror or os.strerror(error.errno or errno.EIO)
    renamed = type(error)(error.errno or errno.EIO, f"cannot write {os.fspath(path)!r}: {reason}")
    return renamed


def _fsync_folder(folder: Path) -> None:
    if os.name != "posix":  # Windows cannot open a folder for fsync; its rename is durable enough
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
