"""The files that keep what the optimizer measured, so a second run on the same machine measures nothing new.

Both tables, the cost table (per-layer latency on an engine) and the sensitivity table (per-layer loss
on the user's data), are a :class:`CacheFile`: a JSON document of records, each stored under the
*key* it was measured for (everything its value depends on, written out in the file, so a reader can
see why a record was or was not reused). A record is reused only when its whole key matches: measured
under another key (another CPU, engine version, model weight, data split), it is never trusted.

The rules, one place for both tables:

- a missing file is an empty table; a file that is not such a document (not JSON, another format, a
  record whose key does not hash to its name, a value that fails the table's check) is named in a
  :class:`CacheWarning` and treated as empty: everything is measured again, and the next save
  replaces it;
- saves are atomic (:func:`sepconv.io.atomic_write_bytes`): readers and a run killed mid-save see the
  old file or the new one; the cost table saves after each layer, the sensitivity table after each
  candidate, so Ctrl-C loses at most the one it interrupted;
- the files live in :func:`cache_folder` unless the caller names one.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from sepconv.io.atomic import PathLike, atomic_write_bytes
from sepconv.io.bounded_json import load_bounded_json

__all__ = ["CacheFile", "CacheWarning", "cache_folder", "key_digest"]

# Bounds on a cache file read back: far above any real table (resnet18's costs are ~100 records of
# ~1 KB), small enough that a stray huge file is refused rather than parsed.
_MAX_CHARS = 256 * 1024 * 1024
_MAX_DEPTH = 16


class CacheWarning(UserWarning):
    """A cache file that could not be used as it was (unreadable, corrupt, foreign): it is measured again."""


def cache_folder() -> Path:
    """Where sepconv keeps its measurements: ``$SEPCONV_CACHE_DIR``, else ``$XDG_CACHE_HOME/sepconv``,
    else ``~/.cache/sepconv`` (the XDG convention: a cache may be deleted, and is then rebuilt)."""
    configured = os.environ.get("SEPCONV_CACHE_DIR")
    if configured:
        return Path(configured).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "sepconv"
    return Path.home() / ".cache" / "sepconv"


def key_digest(key: Mapping[str, Any]) -> str:
    """The name a record is stored under: the SHA-256 of its key as canonical JSON (sorted keys).

    >>> key_digest({"b": 1, "a": [2]}) == key_digest({"a": [2], "b": 1})
    True
    """
    text = json.dumps(key, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


class CacheFile:
    """A JSON file of records, each under the key it was measured for; see the module docs for its rules.

    ``format`` names the table (``"sepconv-sensitivity/1"``): a file of another format is foreign.
    ``check(value)`` raises ``ValueError`` (or ``TypeError``) for a value the table would not have
    written; one such value makes the whole file untrusted. Keys and values are JSON-able mappings.
    """

    def __init__(self, path: PathLike, *, format: str, check: Callable[[Any], object]) -> None:
        self.path = Path(path)
        self.format = format
        self._check = check
        self._records: dict[str, dict[str, Any]] = {}
        self.problem: str | None = None
        """Why the file on disk was not used (None when it was, or when there was none)."""
        self._load()

    def __len__(self) -> int:
        return len(self._records)

    def get(self, key: Mapping[str, Any]) -> dict[str, Any] | None:
        """The value measured for exactly ``key``, or None."""
        record = self._records.get(key_digest(key))
        return None if record is None else dict(record["value"])

    def put(self, key: Mapping[str, Any], value: Mapping[str, Any]) -> None:
        """Keep ``value`` under ``key`` (in memory: :meth:`save` writes the file)."""
        self._check(value)
        self._records[key_digest(key)] = {"key": dict(key), "value": dict(value)}

    def save(self) -> None:
        """Write the whole table atomically (created with its folder if missing).

        Records another process saved to the file since this table read it are kept (two runs sharing
        a table lose neither's work; on the same key, this table's record wins).
        """
        self._records = {**self._saved_meanwhile(), **self._records}
        document = {"format": self.format, "records": self._records}
        text = json.dumps(document, indent=1, sort_keys=True, allow_nan=False)
        atomic_write_bytes(self.path, (text + "\n").encode())

    def _saved_meanwhile(self) -> dict[str, dict[str, Any]]:
        """The records the file holds now, when it is a good table; nothing otherwise (it is replaced)."""
        try:
            return self._parse(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError):
            return {}

    def _load(self) -> None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        except (OSError, UnicodeDecodeError) as error:
            self._distrust(f"cannot be read ({error})")
            return
        try:
            self._records = self._parse(text)
        except (ValueError, TypeError, KeyError) as error:
            self._distrust(str(error))

    def _parse(self, text: str) -> dict[str, dict[str, Any]]:
        document = load_bounded_json(text, what="it", max_chars=_MAX_CHARS, max_depth=_MAX_DEPTH)
        if not isinstance(document, dict) or document.get("format") != self.format:
            found = document.get("format") if isinstance(document, dict) else type(document).__name__
            raise ValueError(f"it is not a {self.format} table (format {found!r})")
        records = document.get("records")
        if not isinstance(records, dict):
            raise ValueError("its records are not a JSON object")
        for digest, record in records.items():
            if not isinstance(record, dict) or not isinstance(record.get("key"), dict):
                raise ValueError(f"record {digest[:12]} has no key")
            if key_digest(record["key"]) != digest:
                raise ValueError(f"record {digest[:12]} is stored under a name its key does not hash to")
            if not isinstance(record.get("value"), dict):
                raise ValueError(f"record {digest[:12]} has no value")
            try:
                self._check(record["value"])
            except (ValueError, TypeError) as error:
                raise ValueError(f"record {digest[:12]}: {error}") from None
        return records

    def _distrust(self, reason: str) -> None:
        self.problem = f"{os.fspath(self.path)}: {reason}; its measurements are not used and will be redone"
        warnings.warn(self.problem, CacheWarning, stacklevel=4)
