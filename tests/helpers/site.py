"""The documentation site, built once from a copy of its sources, served over HTTP, its links checked.

The build never writes into the repository: Sphinx and sphinx-gallery write generated pages next to
the sources (``docs/auto_tutorials``, ``docs/reference/api``, ``docs/sg_execution_times.rst``, and
whatever an extension adds later), so :func:`copy_sources` puts the docs' sources (the files git
tracks or would track, never a developer's generated output) into a scratch folder and links the rest
of the repository beside them, for the pages that include ``../README.md`` and the like. A stale
``auto_tutorials`` from an earlier build would also make sphinx-gallery skip the tutorials whose
source it has seen (it compares MD5s): from a clean copy, every tutorial is executed.

The built site is then served by :func:`serve` on 127.0.0.1 (``http.server`` in a thread), so that a
browser sees it as a hosted site, and :func:`site_faults` turns what the browser saw of each page
(:class:`tests.helpers.browser.ServedPage`) into a list of faults: a request outside the site, a console
error, an image that does not decode, a link to a missing page or to a missing ``#fragment``.
"""

from __future__ import annotations

import functools
import http.server
import os
import pickle
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from tests.helpers.page_parser import parse_page
from tests.helpers.project import REPOSITORY, copy_project

# Switches that make a build partial (docs/conf.py); a test build is always the whole site.
PARTIAL_BUILD_SWITCHES = ("SEPCONV_DOCS_API", "SEPCONV_DOCS_TUTORIALS")


def copy_sources(repository: Path, destination: Path) -> Path:
    """``docs/`` copied (its sources only) into ``destination``, every other top-level entry linked."""
    copy_project(repository, destination, ("docs",))
    for entry in repository.iterdir():
        if entry.name not in ("docs", ".git"):
            (destination / entry.name).symlink_to(entry)
    return destination / "docs"


@dataclass
class SiteBuild:
    """One build of the site: Sphinx's exit code and output, how long it took, where the pages are."""

    returncode: int
    log: str
    seconds: float
    cpu_seconds: float  # the build's processes, user + system: a load-independent measure of its cost
    sources: Path
    out: Path
    written_into_repository: list[str]  # files under the repository's docs/ that the build added or changed

    def pages(self) -> list[str]:
        """Every built HTML page, relative to the site's root, sorted."""
        return sorted(path.relative_to(self.out).as_posix() for path in self.out.rglob("*.html"))


def _docs_files_state() -> dict[str, int]:
    docs = REPOSITORY / "docs"
    return {
        str(path.relative_to(docs)): path.stat().st_mtime_ns for path in docs.rglob("*") if path.is_file()
    }


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def build_site(scratch: Path) -> SiteBuild:
    """Build the whole site (warnings are errors) from a copy of the sources in ``scratch``.

    Sphinx runs in a subprocess on the sepconv this test process imports (its folder first on
    PYTHONPATH), so the API reference documents the code under test.
    """
    import sepconv

    sources = copy_sources(REPOSITORY, scratch / "project")
    out = scratch / "html"
    env = {name: value for name, value in os.environ.items() if name not in PARTIAL_BUILD_SWITCHES}
    package_root = str(Path(sepconv.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    command = [
        sys.executable,
        "-m",
        "sphinx",
        "-b",
        "html",
        "-W",
        "--keep-going",
        "-q",
        str(sources),
        str(out),
    ]
    before = _docs_files_state()
    cpu_before = _children_cpu_seconds()
    started = time.perf_counter()
    result = subprocess.run(command, cwd=scratch, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    cpu_seconds = _children_cpu_seconds() - cpu_before
    after = _docs_files_state()
    written = sorted(path for path, stamp in after.items() if before.get(path) != stamp)
    log = result.stdout + result.stderr
    return SiteBuild(result.returncode, log, seconds, cpu_seconds, sources, out, written)


def toctree_documents(out: Path) -> tuple[list[str], set[str]]:
    """The documents reachable from the root page through the toctrees, and every document Sphinx found.

    Read from the build's environment (``.doctrees/environment.pickle``), which holds every toctree,
    hidden ones included (sphinx-gallery's index hides its own).
    """
    with (out / ".doctrees" / "environment.pickle").open("rb") as stream:
        environment = pickle.load(stream)
    includes: dict[str, list[str]] = environment.toctree_includes
    reached: list[str] = []
    waiting = [environment.config.root_doc]
    while waiting:
        document = waiting.pop(0)
        if document not in reached:
            reached.append(document)
            waiting += includes.get(document, [])
    return reached, set(environment.found_docs)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def serve(root: Path) -> Iterator[str]:
    """Serve ``root`` on 127.0.0.1 (a free port) in a thread; yields the base URL (ending in ``/``)."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _target_file(root: Path, path: str) -> Path:
    target = root / unquote(path).lstrip("/")
    return target / "index.html" if path.endswith("/") or target.is_dir() else target


@functools.cache
def _ids_in_source(page: Path) -> frozenset[str]:
    # For a page the browser did not open: the ids and anchor names in its source.
    parts = parse_page(page.read_text(encoding="utf-8"))
    return frozenset(parts.ids)


def site_faults(pages: list, root: Path, base_url: str) -> list[str]:
    """What is wrong with the served pages ``pages`` (``ServedPage`` views of pages under ``root``),
    one line per fault, naming the page: requests outside the site, console errors, images that did not
    decode, failed responses (404), and internal links whose page or ``#fragment`` does not exist."""
    ids_seen = {page.path: set(page.ids) for page in pages}
    faults = []
    for page in pages:
        faults += [f"{page.path}: request outside the site: {url}" for url in page.outside_requests]
        faults += [f"{page.path}: console error: {error}" for error in page.errors]
        faults += [f"{page.path}: response: {response}" for response in page.failed_responses]
        faults += [f"{page.path}: image not decoded: {image}" for image in page.undecoded_images]
        for link in page.links:
            if not link.startswith(base_url):
                continue  # another site (the theme's credits) or mailto:; never fetched here
            parts = urlsplit(link)
            target = _target_file(root, parts.path)
            relative = target.relative_to(root).as_posix() if target.is_relative_to(root) else parts.path
            if not target.is_file():
                faults.append(f"{page.path}: link to a missing page: {link}")
            elif parts.fragment and target.suffix == ".html":
                ids = ids_seen.get(relative)
                if ids is None:
                    ids = _ids_in_source(target)
                if unquote(parts.fragment) not in ids:
                    faults.append(f"{page.path}: link to a missing anchor: {link}")
    return faults
