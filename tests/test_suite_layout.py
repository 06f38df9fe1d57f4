"""The test suite's own layout: shared code in ``tests/helpers``, no test module importing another, files
named by the feature they test.

A test module that imports another runs the other's module-level code (and, under xdist, may import it
under a second name); a helper kept beside the tests that use it is found by nobody else. So what tests
share lives in one package, and these checks keep it there. Each rule is also run on a planted example,
so a check that matches nothing cannot pass silently.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
HELPERS = TESTS / "helpers"
# Suffixes that name the campaign that wrote a file rather than the feature it tests.
CAMPAIGN_SUFFIXES = ("_extra", "_details", "_units", "_contracts", "_more", "_misc", "_new")


def imported_test_modules(source: str) -> list[str]:
    """The modules of ``tests`` that ``source`` imports, other than the helpers package."""
    imported = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level:
            imported.append("." * node.level + (node.module or ""))  # a sibling: by its dots
        elif isinstance(node, ast.ImportFrom) and node.module == "tests":
            imported += [f"tests.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            imported.append(node.module or "")
    return [
        name
        for name in imported
        if name.startswith(".")
        or (
            name.split(".")[0] == "tests"
            and name != "tests.helpers"
            and not name.startswith("tests.helpers.")
        )
    ]


def _python_files() -> list[Path]:
    return sorted(path for path in TESTS.rglob("*.py") if "__pycache__" not in path.parts)


def test_no_test_module_imports_another() -> None:
    offenders = {
        str(path.relative_to(TESTS)): names
        for path in _python_files()
        if HELPERS not in path.parents  # the helpers may import each other
        and (names := imported_test_modules(path.read_text(encoding="utf-8")))
    }
    assert offenders == {}


@pytest.mark.parametrize(
    ("source", "found"),
    [
        ("from tests.analysis.test_field_rules import Op", ["tests.analysis.test_field_rules"]),
        ("import tests.train.test_resume_exact as resume", ["tests.train.test_resume_exact"]),
        ("from .test_blocks import randomize_norms", [".test_blocks"]),
        ("from tests.helpers.fields import Op\nimport tests.helpers.cli", []),
        ("from tests import helpers\nfrom tests import conftest", ["tests.conftest"]),
        ("import testsuite\nfrom tests.helpersx import y\nfrom sepconv import layers", ["tests.helpersx"]),
    ],
)
def test_the_import_rule_finds_a_planted_import(source: str, found: list[str]) -> None:
    assert imported_test_modules(source) == found


def test_shared_code_lives_in_the_helpers_package() -> None:
    # Only test modules and conftest.py files outside tests/helpers; no test module inside it.
    outside = [
        str(path.relative_to(TESTS))
        for path in _python_files()
        if HELPERS not in path.parents and not path.name.startswith("test_") and path.name != "conftest.py"
    ]
    inside = [str(path.relative_to(TESTS)) for path in HELPERS.glob("test_*.py")]
    assert (outside, inside) == ([], [])
    assert (HELPERS / "__init__.py").is_file()  # a regular package: `import tests.helpers.X` resolves


def test_test_files_are_named_by_feature() -> None:
    named_by_campaign = [
        str(path.relative_to(TESTS))
        for path in _python_files()
        if path.name.startswith("test_") and path.stem.endswith(CAMPAIGN_SUFFIXES)
    ]
    assert named_by_campaign == []
