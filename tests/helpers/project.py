"""The project's own files (what git tracks, or would), copied into a scratch folder for a build.

Builds write next to their sources (Sphinx's generated pages, setuptools' ``*.egg-info``); a test
builds a copy instead, so it never writes into the repository and never picks up a developer's stale
build output.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]


def project_files(repository: Path, folder: str) -> list[Path]:
    """The files under ``folder`` that git tracks or would track (untracked but not ignored), relative.

    Outside a git checkout (an unpacked sdist), every file but caches and the site's build output.
    """
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", "--", folder],
            cwd=repository,
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        skipped = {"__pycache__", "_build", "auto_tutorials", "build", "dist"}
        return [
            path.relative_to(repository)
            for path in sorted((repository / folder).rglob("*"))
            if path.is_file()
            and not skipped & set(path.relative_to(repository).parts)
            and "docs/reference/api" not in path.relative_to(repository).as_posix()
        ]
    names = [name for name in listed.decode().split("\0") if name]
    return [Path(name) for name in names if (repository / name).is_file()]  # not a deleted file


def copy_project(repository: Path, destination: Path, folders: tuple[str, ...]) -> Path:
    """Copy the project files of ``folders`` into ``destination``; returns ``destination``."""
    for folder in folders:
        for relative in project_files(repository, folder):
            target = destination / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(repository / relative, target)
    return destination
