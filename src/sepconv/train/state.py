"""Training state files and random-generator state: what a resumed run needs besides the weights.

A training state (optimizer, scheduler, loop counters, RNG states) is a ``torch.save`` payload behind
a small header with its SHA-256, written atomically and read back only with
``torch.load(weights_only=True)``, so a damaged or malicious file is a :class:`CheckpointError` and
never runs code. :func:`capture_rng_state` / :func:`restore_rng_state` are the one place that knows
every generator training draws from. Lightning is not imported here.
"""

from __future__ import annotations

import hashlib
import io
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from sepconv.io import CheckpointError, atomic_write_bytes
from sepconv.io.atomic import PathLike

__all__ = ["capture_rng_state", "load_training_state", "restore_rng_state", "save_training_state"]

_STATE_MAGIC = b"SEPCONV-TRAINING-STATE\x00v1\n"
_DIGEST_BYTES = 32


def save_training_state(path: PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` (tensors, numbers, strings, lists, dicts) atomically, with a SHA-256 to check on load.

    Only what ``torch.load(weights_only=True)`` accepts may go in (optimizer and scheduler
    ``state_dict()``, ``torch.get_rng_state()``, ints); anything else is a ValueError here, at save
    time, rather than a checkpoint that cannot be resumed from.
    """
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict, got {type(state).__name__}")
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    try:
        torch.load(io.BytesIO(payload), weights_only=True, map_location="cpu")
    except Exception as error:  # weights_only raises several types; each means "not safe to store"
        raise ValueError(
            f"cannot save training state to {path}: it holds objects that safe loading refuses "
            f"({' '.join(str(error).split())[:300]}); store plain tensors, numbers, strings, lists and dicts"
        ) from None
    return atomic_write_bytes(path, _STATE_MAGIC + hashlib.sha256(payload).digest() + payload)


def load_training_state(path: PathLike) -> dict[str, Any]:
    """Read a state written by :func:`save_training_state`; never runs code from the file.

    A file that is truncated, altered, of another format, or that would need arbitrary objects
    (a malicious pickle) is a :class:`CheckpointError` naming the file.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"training state file not found: {file}")
    data = file.read_bytes()
    header_size = len(_STATE_MAGIC) + _DIGEST_BYTES
    if not data.startswith(_STATE_MAGIC):
        kind = "empty" if not data else "not a sepconv training state (written by save_training_state)"
        raise CheckpointError(f"{file} is {kind}")
    payload = data[header_size:]
    # A header with no payload is truncated too, even where its digest is that of zero bytes.
    if len(data) <= header_size or hashlib.sha256(payload).digest() != data[len(_STATE_MAGIC) : header_size]:
        raise CheckpointError(f"{file} is corrupt or truncated: its contents do not match their checksum")
    try:
        state = torch.load(io.BytesIO(payload), weights_only=True, map_location="cpu")
    except Exception as error:  # weights_only refuses anything but tensors and plain containers
        message = " ".join(str(error).split())[:300]
        raise CheckpointError(
            f"{file}: refused to load (it holds objects that could run code): {message}"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{file}: expected a dict of training state, got {type(state).__name__}")
    return state


def capture_rng_state() -> dict[str, Any]:
    """The states of Python's, NumPy's global (Gaussian cache included) and torch's CPU and CUDA
    generators, as tensors, ints, floats and lists (what :func:`save_training_state` accepts).
    """
    version, internal, gauss = random.getstate()
    # np.random's generator is MT19937, whose state is this tuple (numpy's stub allows a dict too)
    numpy_state = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
    kind, keys, position, has_gauss, cached = numpy_state
    return {
        "python": [version, list(internal), gauss],
        "numpy": [
            kind,
            torch.from_numpy(keys.astype(np.int64)),
            int(position),
            int(has_gauss),
            float(cached),
        ],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Put back the generator states captured by :func:`capture_rng_state`.

    >>> saved = capture_rng_state(); first = torch.rand(1)
    >>> restore_rng_state(saved); torch.equal(torch.rand(1), first)
    True
    """
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
