"""The documentation site, built once per test process for the tests of ``tests/docs`` that read it.

Conventions of this folder: a test that needs the built site asks for ``built_site`` and is marked
``slow`` and ``xdist_group("docs-site")`` (pytest-xdist's ``--dist loadgroup`` then runs all of them on
one worker, so the site is built once per run, in about a minute); a test that opens pages in
Chromium is also marked ``browser``. The pages' own code blocks are run by ``docs/conftest.py``
(Sybil, under the ``docs`` test path), not here. ``python -m pytest -n 0 tests/docs`` runs this folder.
"""

from __future__ import annotations

import pytest
from tests.helpers.site import SiteBuild, build_site


@pytest.fixture(scope="session")
def built_site(tmp_path_factory: pytest.TempPathFactory) -> SiteBuild:
    """The whole site (API reference and every tutorial) built from a copy of ``docs/``, with -W."""
    return build_site(tmp_path_factory.mktemp("docs-site"))
