"""Run the code blocks of the documentation pages as tests (Sybil), so that a page cannot drift.

In every Markdown page under ``docs/``:

- a ``python`` block runs, in order, in one namespace per page; a block written as a doctest
  (``>>>`` lines followed by what they print) is checked against that output;
- a ``bash`` block runs as a ``bash -euo pipefail`` script with ``sepconv`` on the PATH, in a scratch
  folder that all blocks of the page share (so a later block can use a file an earlier one wrote);
  it must exit 0;
- ``text`` and ``console`` blocks show output and are not run;
- ``% skip: next "reason"`` before a block leaves that block out (say why: a download, several
  processes, minutes of work).

Each page gets its own scratch folder, cache folder (``SEPCONV_CACHE_DIR``) and working directory, and
its blocks run on one pytest worker, in order. The tutorials (``docs/tutorials/*.py``) are not run
here: sphinx-gallery runs them when the site is built (``tests/docs``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from doctest import ELLIPSIS, NORMALIZE_WHITESPACE
from pathlib import Path
from typing import Any

import pytest
from sybil import Example, Sybil
from sybil.parsers.myst import CodeBlockParser, PythonCodeBlockParser, SkipParser

DOCS = Path(__file__).resolve().parent
BASH_TIMEOUT_S = 600

# Not pages: the site's configuration, its Sphinx extensions and the tutorials (run by the build).
collect_ignore_glob = ["conf.py", "_ext/*", "tutorials/*", "_build/*", "auto_tutorials/*", "reference/api/*"]


def _run_bash(example: Example) -> None:
    namespace = example.namespace
    # SEPCONV_CACHE_DIR is already the page's own: _setup set it in this process's environment
    env = dict(os.environ, COLUMNS="100")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", example.parsed],
        cwd=namespace["_workdir"],
        env=env,
        capture_output=True,
        text=True,
        timeout=BASH_TIMEOUT_S,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(
            f"exit code {result.returncode} from:\n{example.parsed}\n"
            f"--- stdout ---\n{result.stdout[-4000:]}\n--- stderr ---\n{result.stderr[-4000:]}"
        )


def _setup(namespace: dict[str, Any]) -> None:
    scratch = Path(tempfile.mkdtemp(prefix="sepconv-docs-"))
    namespace["_scratch"] = scratch
    namespace["_workdir"] = scratch / "work"
    namespace["_cache_dir"] = scratch / "cache"
    namespace["_workdir"].mkdir()
    namespace["_previous_cwd"] = os.getcwd()
    namespace["_previous_cache"] = os.environ.get("SEPCONV_CACHE_DIR")
    os.environ["SEPCONV_CACHE_DIR"] = str(namespace["_cache_dir"])
    os.chdir(namespace["_workdir"])  # the python blocks write their files here too


def _teardown(namespace: dict[str, Any]) -> None:
    os.chdir(namespace["_previous_cwd"])
    if namespace["_previous_cache"] is None:
        os.environ.pop("SEPCONV_CACHE_DIR", None)
    else:
        os.environ["SEPCONV_CACHE_DIR"] = namespace["_previous_cache"]
    shutil.rmtree(namespace["_scratch"], ignore_errors=True)


pytest_collect_file = Sybil(
    parsers=[
        PythonCodeBlockParser(doctest_optionflags=ELLIPSIS | NORMALIZE_WHITESPACE),
        CodeBlockParser(language="bash", evaluator=_run_bash),
        SkipParser(),
    ],
    patterns=["*.md"],
    excludes=["_build/*", "auto_tutorials/*"],
    setup=_setup,
    teardown=_teardown,
).pytest()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # One page's blocks share a namespace and a folder, so they must run in order on one worker
    # (pytest-xdist's --dist loadgroup keeps an xdist_group together).
    for item in items:
        path = Path(str(item.path))
        if path.suffix == ".md" and DOCS in path.parents:
            item.add_marker(pytest.mark.xdist_group(f"docs-page-{path.relative_to(DOCS)}"))
