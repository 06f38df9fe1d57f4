"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Every file sepconv writes that another process may read (model files, training state, logs) goes
through :func:`atomic_write_bytes`, so a process killed mid-write leaves the previous file intact.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["PathLike", "atomic_write_bytes"]

PathLike = str | os.PathLike[str]


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a mix.

    Writes a temporary file in the same folder, flushes and fsyncs it, renames it over ``path``
    (``os.replace`` is atomic on one file system) and fsyncs the folder so the rename survives a
    crash. Creates missing parent folders. Returns ``path``.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_folder(target.parent)
    return target


def _fsync_folder(folder: Path) -> None:
    if os.name != "posix":  # Windows cannot open a folder for fsync; its rename is durable enough
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
