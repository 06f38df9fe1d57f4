"""Every page of the built site, opened in headless Chromium as a visitor of a hosted site would see it.

The site is served over HTTP on 127.0.0.1 and every HTML page (API reference included) is opened in
one browser tab, in turn: no page may ask for anything outside the site, log a console error, show an
image that does not decode, or link to a page or ``#fragment`` of the site that does not exist. The
same checks run on copies of a built page with a planted fault, and must report each one. Slow,
``browser``, and in the ``docs-site`` group with the build (``conftest.py``).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from tests.helpers.browser import LOOPBACK_ONLY, Browser, launch
from tests.helpers.site import SiteBuild, serve, site_faults

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.xdist_group("docs-site")]


@pytest.fixture(scope="module")
def browser():
    yield from launch(*LOOPBACK_ONLY)


def test_every_page_of_the_site_in_a_browser(built_site: SiteBuild, browser: Browser) -> None:
    pages = built_site.pages()
    started = time.perf_counter()
    with serve(built_site.out) as base_url:
        views = browser.open_site(base_url, pages)
        faults = site_faults(views, built_site.out, base_url)
    print(f"{len(pages)} pages opened and checked in {time.perf_counter() - started:.1f} s")  # -rA shows it
    assert faults == []
    assert [view.path for view in views] == pages
    # the checks saw something: every page links somewhere, and the site shows images
    assert all(view.links for view in views)
    assert sum(len(view.images) for view in views) > 0


def _planted_site(site: Path, folder: Path, plants: dict[str, str]) -> Path:
    """``folder`` serving the built ``site`` (linked) plus copies of its index page, each with one planted
    piece of HTML (``plants``: file name -> HTML) at the end of its body."""
    for entry in site.iterdir():
        (folder / entry.name).symlink_to(entry)
    index = (site / "index.html").read_text(encoding="utf-8")
    for name, planted in plants.items():
        assert index.count("</body>") == 1
        (folder / name).write_text(index.replace("</body>", f"{planted}</body>"), encoding="utf-8")
    return folder


def test_the_checks_catch_a_planted_broken_link_missing_anchor_and_remote_image(
    built_site: SiteBuild, browser: Browser, tmp_path
) -> None:
    """A control: the checks must fail on a broken page, or their pass above would prove nothing."""
    remote = "https://example.com/x.png"
    plants = {
        "clean.html": "",
        "broken-link.html": '<a href="missing.html">a page that is not there</a>',
        "missing-anchor.html": '<a href="getting-started.html#no-such-section">a section that is not there</a>',
        "remote-image.html": f'<img alt="remote" src="{remote}">',
    }
    root = _planted_site(built_site.out, tmp_path, plants)
    with serve(root) as base_url:
        views = browser.open_site(base_url, list(plants))
        faults = {view.path: site_faults([view], root, base_url) for view in views}
    assert faults["clean.html"] == []
    assert faults["broken-link.html"] == [f"broken-link.html: link to a missing page: {base_url}missing.html"]
    assert faults["missing-anchor.html"] == [
        f"missing-anchor.html: link to a missing anchor: {base_url}getting-started.html#no-such-section"
    ]
    image_faults = faults["remote-image.html"]
    assert f"remote-image.html: request outside the site: {remote}" in image_faults
    assert f"remote-image.html: image not decoded: {remote}" in image_faults
    # nothing else but the browser's own line about the failed load
    assert all("Failed to load resource" in fault for fault in image_faults if "console error" in fault), (
        image_faults
    )
