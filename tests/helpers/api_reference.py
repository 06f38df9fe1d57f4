"""The API reference's generator (``docs/_ext/sepconv_api.py``), imported once, and its plan of pages.

The plan imports every public module of sepconv (seconds of CPU), so it is computed once per process
and shared by the tests that read it.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from types import ModuleType
from typing import Any

from tests.helpers.project import REPOSITORY

GENERATOR = REPOSITORY / "docs" / "_ext" / "sepconv_api.py"


@functools.cache
def generator() -> ModuleType:
    """``docs/_ext/sepconv_api.py`` as a module (Sphinx imports it the same way, from ``docs/_ext``)."""
    spec = importlib.util.spec_from_file_location("sepconv_api", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # a dataclass of the module looks its module up there
    spec.loader.exec_module(module)
    return module


@functools.cache
def planned_pages() -> dict[str, Any]:
    """The generator's plan: each public module's page (what it documents, what it links to), by name."""
    return {page.name: page for page in generator().plan_pages()}
