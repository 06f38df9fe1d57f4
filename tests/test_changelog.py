"""CHANGELOG.md follows Keep a Changelog and names the version the package reports.

A release whose version string is not the changelog's newest entry (the version stayed 0.1.0 through
six feature releases once) is one users cannot map to what changed.
"""

from __future__ import annotations

import re
from datetime import date
from importlib import metadata
from pathlib import Path

import sepconv

ROOT = Path(__file__).resolve().parents[1]
RELEASE = re.compile(r"^## \[(?P<version>\d+\.\d+\.\d+)\] - (?P<date>\d{4}-\d{2}-\d{2})$")
KINDS = {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}  # Keep a Changelog 1.1.0


def _lines() -> list[str]:
    return (ROOT / "CHANGELOG.md").read_text(encoding="utf-8").splitlines()


def _releases() -> list[tuple[tuple[int, ...], date]]:
    found = []
    for line in _lines():
        if match := RELEASE.match(line):
            version = tuple(int(part) for part in match["version"].split("."))
            found.append((version, date.fromisoformat(match["date"])))
    return found


def test_newest_release_is_the_package_version() -> None:
    newest = ".".join(str(part) for part in _releases()[0][0])
    assert newest == sepconv.__version__
    assert metadata.version("sepconv") == sepconv.__version__  # pyproject reads it from the package


def test_releases_run_newest_first_by_version_and_date() -> None:
    releases = _releases()
    assert len(releases) >= 2
    assert releases == sorted(releases, reverse=True)
    assert [version for version, _ in releases] == sorted({v for v, _ in releases}, reverse=True)


def test_sections_follow_keep_a_changelog() -> None:
    lines = _lines()
    assert lines[0] == "# Changelog"
    assert "## [Unreleased]" in lines  # where the next change is written down first
    kinds = {line[4:] for line in lines if line.startswith("### ")}
    assert kinds <= KINDS, kinds - KINDS
    for line in lines:
        if line.startswith("## ") and line != "## [Unreleased]":
            assert RELEASE.match(line), line
