"""The code-quality gates CI runs with the tests: ruff (lint and format), the type checker (mypy) and
the import-layer contracts (import-linter), each configured in pyproject.toml.

Each gate runs as a subprocess from the repository root, the way a developer runs it, and its whole
output is shown when it fails. The contracts are also run on a copy of the package with an import
planted against them, to prove they fail when the layers are broken.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECKED_TREES = ("src", "tests", "benchmarks", "docs")

# the tools' own entry points, run with this interpreter so the test uses the installed versions
RUFF = (sys.executable, "-m", "ruff")
MYPY = (sys.executable, "-m", "mypy")
LINT_IMPORTS = (
    sys.executable,
    "-c",
    "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())",
)


def run_tool(command: tuple[str, ...], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run a tool and return its result, stdout and stderr together (they interleave on a terminal)."""
    return subprocess.run(
        command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False
    )


def assert_passes(result: subprocess.CompletedProcess[str]) -> None:
    if result.returncode != 0:
        pytest.fail(f"{' '.join(result.args)} exited {result.returncode}:\n{result.stdout}", pytrace=False)


def test_ruff_lint_passes() -> None:
    assert_passes(run_tool((*RUFF, "check", *CHECKED_TREES)))


def test_ruff_format_is_applied() -> None:
    assert_passes(run_tool((*RUFF, "format", "--check", *CHECKED_TREES)))


@pytest.mark.slow  # cold (a clean clone, no .mypy_cache): 45-90 s on 2 cores, torch's stubs mostly; cached: 4 s
def test_type_check_passes() -> None:
    # the modules, strictness and third-party gaps are configured in pyproject.toml [tool.mypy]
    assert_passes(run_tool(MYPY))


def test_import_layer_contracts_are_kept() -> None:
    # --no-cache: nothing written into the repository
    assert_passes(run_tool((*LINT_IMPORTS, "--no-cache", "--no-logo")))


def _package_copy_with(tmp_path: Path, planted_module: str, planted_import: str) -> Path:
    """A copy of src/sepconv and pyproject.toml under tmp_path, with one module added that makes one
    import; returns the copy's root (run lint-imports there with the copy first on PYTHONPATH)."""
    shutil.copytree(
        ROOT / "src" / "sepconv", tmp_path / "src" / "sepconv", ignore=shutil.ignore_patterns("*.pyc")
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    planted_file = tmp_path / "src" / Path(*planted_module.split(".")).with_suffix(".py")
    planted_file.write_text(f'"""Planted by the test: breaks the import contracts."""\n\n{planted_import}\n')
    return tmp_path


@pytest.mark.parametrize(
    ("planted_module", "planted_import", "expected"),
    [
        # upward: a building block importing the command line
        ("sepconv.layers.planted", "import sepconv.cli", "sepconv.layers.planted -> sepconv.cli"),
        # sideways: analysis and io are siblings that must not import each other
        (
            "sepconv.analysis.planted",
            "import sepconv.io.recipe",
            "sepconv.analysis.planted -> sepconv.io.recipe",
        ),
    ],
)
def test_import_layer_contracts_fail_on_a_planted_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, planted_module: str, planted_import: str, expected: str
) -> None:
    copy = _package_copy_with(tmp_path, planted_module, planted_import)
    # import-linter finds the package by importing it: the copy must shadow the installed one
    monkeypatch.setenv("PYTHONPATH", str(copy / "src"))
    result = run_tool((*LINT_IMPORTS, "--no-cache", "--no-logo"), cwd=copy)
    assert result.returncode == 1, result.stdout
    assert "BROKEN" in result.stdout
    assert expected in result.stdout, result.stdout
