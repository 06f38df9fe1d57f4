"""The package as users get it: ``python -m build`` makes an sdist and a wheel, and the wheel, installed
into a fresh virtual environment, runs without the source tree.

The build works on a copy of the project (``tests/helpers/project.py``: setuptools writes its
``*.egg-info`` next to the sources) and without isolation (``--no-isolation``): an isolated build would
download setuptools into a throw-away environment, and the suite runs offline. ``python -m build``
makes the sdist first and the wheel from the unpacked sdist, so a file the sdist forgets cannot
reach the wheel either.

The virtual environment sees the installed packages (``--system-site-packages``: torch and the rest
are not downloaded again) but its own sepconv, installed from the wheel alone (``--no-deps
--no-index``), comes first; the commands run outside the repository with no PYTHONPATH, and the test
checks that the sepconv they import is the venv's. The HTML report needs the wheel's templates and the
training kernels its C++ sources: a wheel without either fails here. Slow (building the sdist and the
wheel, and starting the installed commands), in one ``xdist_group`` so the wheel is built once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.helpers.page_parser import parse_page
from tests.helpers.project import REPOSITORY, copy_project, project_files

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("wheel")]

# What the sdist must carry besides the package: the project's tests and docs run from it.
SDIST_FOLDERS = ("src", "tests", "docs", "benchmarks")
PACKAGE_DATA = ("kernels/csrc/*.cpp", "kernels/csrc/*.h", "viz/templates/*.html")


@dataclass
class Installed:
    """The built sdist and wheel, and a venv with the wheel installed; ``run`` runs one of its commands."""

    sdist: Path
    wheel: Path
    venv: Path
    elsewhere: Path  # a working directory outside the repository

    def run(
        self, *command: str, env: dict[str, str] | None = None, timeout_s: float = 300
    ) -> subprocess.CompletedProcess[str]:
        clean = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
        return subprocess.run(
            [str(self.venv / "bin" / command[0]), *command[1:]],
            cwd=self.elsewhere,
            env={**clean, **(env or {})},
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout_s,  # a hung command fails the test; no verdict rests on its time
        )


def _run(*command: str | Path, cwd: Path) -> None:
    result = subprocess.run([str(part) for part in command], cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, f"{command}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    scratch = tmp_path_factory.mktemp("wheel")
    project = copy_project(REPOSITORY, scratch / "project", (".",))
    dist = scratch / "dist"
    _run(sys.executable, "-m", "build", "--no-isolation", "--outdir", dist, project, cwd=scratch)
    (sdist,), (wheel,) = sorted(dist.glob("*.tar.gz")), sorted(dist.glob("*.whl"))
    venv = scratch / "venv"
    _run(sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv, cwd=scratch)
    pip = [sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "--quiet"]
    _run(*pip, "--no-deps", "--no-index", "--ignore-installed", wheel, cwd=scratch)
    elsewhere = scratch / "elsewhere"
    elsewhere.mkdir()
    return Installed(sdist, wheel, venv, elsewhere)


def test_the_sdist_holds_the_sources_docs_and_tests(installed: Installed) -> None:
    with tarfile.open(installed.sdist) as archive:
        top = installed.sdist.name.removesuffix(".tar.gz")
        names = {name.removeprefix(f"{top}/") for name in archive.getnames()}
    expected = {path.as_posix() for folder in SDIST_FOLDERS for path in project_files(REPOSITORY, folder)}
    assert sorted(expected - names) == []
    assert {"pyproject.toml", "README.md", "CHANGELOG.md"} <= names
    assert not [name for name in names if "__pycache__" in name or "/auto_tutorials/" in name]


def test_the_wheel_installs_and_runs_without_the_source_tree(installed: Installed) -> None:
    where = installed.run("python", "-c", "import sepconv; print(sepconv.__file__)")
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(installed.venv)  # the wheel's, not the repository's
    shown = installed.run("sepconv", "--help")
    assert shown.returncode == 0 and shown.stdout.startswith("usage: sepconv"), shown.stderr
    # the package data: each file the repository ships is installed
    package = Path(where.stdout.strip()).parent
    for pattern in PACKAGE_DATA:
        shipped = sorted(path.name for path in (REPOSITORY / "src" / "sepconv").glob(pattern))
        assert shipped and sorted(path.name for path in package.glob(pattern)) == shipped, pattern


def test_the_installed_html_report_renders_its_template(installed: Installed) -> None:
    page = installed.elsewhere / "summary.html"
    result = installed.run("sepconv", "summary", "standard_cnn", "--html", str(page))
    assert result.returncode == 0, result.stderr
    parts = parse_page(page.read_text(encoding="utf-8"))
    assert "sepconv summary: SmallCNN" in parts.text  # standard_cnn's class, in the template's title
    assert len(parts.tables) == 2 and len(parts.images) == 1


def test_the_installed_kernels_build_from_the_wheels_own_sources(installed: Installed) -> None:
    # What the kernel build would compile, asked of the installed package: the wheel's own C++ files,
    # byte for byte the repository's. Compiling them again here would cost a minute and a half of the
    # suite's two cores and prove only that the compiler works, which tests/kernels already shows on
    # these very bytes; a wheel without them fails here, and sepconv then warns and trains on plain
    # PyTorch (tests/kernels/test_fallback.py).
    check = (
        "from sepconv.kernels import _build\n"
        "for path in sorted(_build._CSRC.glob('*.[ch]*')):\n"
        "    print(path)\n"
    )
    result = installed.run("python", "-c", check)
    assert result.returncode == 0, result.stderr[-3000:]
    sources = [Path(line) for line in result.stdout.split()]
    # the sources and the headers they include
    repository = sorted((REPOSITORY / "src" / "sepconv" / "kernels" / "csrc").glob("*.[ch]*"))
    assert [path.name for path in sources] == [path.name for path in repository] != []
    assert all(path.is_relative_to(installed.venv) for path in sources)  # the wheel's, not the repo's
    assert [path.read_bytes() for path in sources] == [path.read_bytes() for path in repository]
