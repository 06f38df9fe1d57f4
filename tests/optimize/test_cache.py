"""The optimizer's cache files: where they live, how records are keyed, and what is never trusted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sepconv.optimize.cache import CacheFile, CacheWarning, cache_folder, key_digest


def check_value(value: Any) -> None:
    if not isinstance(value.get("ms"), float):
        raise ValueError(f"ms must be a float, got {value.get('ms')!r}")


def table(path: Path) -> CacheFile:
    return CacheFile(path, format="test-table/1", check=check_value)


def test_the_cache_folder_follows_sepconv_then_xdg_then_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SEPCONV_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert cache_folder() == tmp_path / "home" / ".cache" / "sepconv"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_folder() == tmp_path / "xdg" / "sepconv"
    monkeypatch.setenv("SEPCONV_CACHE_DIR", str(tmp_path / "mine"))
    assert cache_folder() == tmp_path / "mine"


def test_records_come_back_under_their_whole_key_only(tmp_path: Path) -> None:
    path = tmp_path / "folder" / "table.json"
    first = table(path)
    assert len(first) == 0 and first.problem is None and not path.exists()
    key = {"layer": "conv1", "threads": 2, "cpu": {"avx2": True}}
    first.put(key, {"ms": 1.5})
    first.save()
    again = table(path)
    assert again.get({"cpu": {"avx2": True}, "threads": 2, "layer": "conv1"}) == {"ms": 1.5}  # order free
    assert again.get({**key, "threads": 4}) is None
    assert again.get({**key, "cpu": {"avx2": False}}) is None
    document = json.loads(path.read_text())
    assert document["format"] == "test-table/1"
    assert document["records"][key_digest(key)] == {"key": key, "value": {"ms": 1.5}}


@pytest.mark.parametrize(
    ("contents", "reason"),
    [
        ("{not json", "is not valid JSON"),
        ('{"format": "other/1", "records": {}}', "is not a test-table/1 table (format 'other/1')"),
        ("[1, 2]", "is not a test-table/1 table (format 'list')"),
        ('{"format": "test-table/1", "records": []}', "its records are not a JSON object"),
        (
            '{"format": "test-table/1", "records": {"abc": {"key": {"a": 1}, "value": {"ms": 1.0}}}}',
            "does not hash",
        ),
        (None, "ms must be a float, got 'fast'"),
    ],
)
def test_a_corrupt_or_foreign_file_is_named_and_never_trusted(
    tmp_path: Path, contents: str | None, reason: str
) -> None:
    path = tmp_path / "table.json"
    if contents is None:  # a record as the table writes it, then its value changed by hand
        key = {"a": 1}
        contents = json.dumps(
            {"format": "test-table/1", "records": {key_digest(key): {"key": key, "value": {"ms": "fast"}}}}
        )
    path.write_text(contents)
    with pytest.warns(CacheWarning) as warned:
        loaded = table(path)
    (message,) = [str(warning.message) for warning in warned]
    assert message.startswith(f"{path}: ") and reason in message and message.endswith("will be redone")
    assert len(loaded) == 0 and loaded.problem == message
    loaded.put({"a": 2}, {"ms": 2.0})
    loaded.save()  # the next save replaces the bad file with a good one
    assert table(path).get({"a": 2}) == {"ms": 2.0}
