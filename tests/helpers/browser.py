"""Open sepconv's HTML pages in a real browser: headless Chromium (Debian's ``chromium``) driven by Playwright.

What a page does in a browser cannot be read off its source: whether every embedded image decodes,
whether the Content-Security-Policy lets the sorting script run, whether the page asks the network for
anything, whether it fits a phone's width. :func:`open_page` loads a file, records every request and
console error, and reads back the images, tables and layout as the browser sees them.

The browser is never downloaded: README's test command installs Debian's ``chromium`` and Playwright
drives that binary (``SEPCONV_CHROMIUM`` names another). Without one the tests fail with that advice
rather than skip, so CI cannot pass while quietly not checking the pages.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image as PILImage

# Without the background-networking switches Chromium calls Google's servers at start-up, which
# would be (refused) network traffic that is not the page's.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
]

# Every request but to 127.0.0.1 goes to a proxy that is not there (port 9, discard): a page that asks
# the network for something is seen asking, and gets nothing. Chromium never proxies loopback addresses.
LOOPBACK_ONLY = ("--proxy-server=http://127.0.0.1:9",)

LAPTOP = {"width": 1366, "height": 768}
PHONE = {"width": 390, "height": 844}

_READ_PAGE = """() => ({
  images: Array.from(document.images).map(image => ({
    alt: image.alt, complete: image.complete, naturalWidth: image.naturalWidth,
    naturalHeight: image.naturalHeight, shownWidth: image.getBoundingClientRect().width,
  })),
  tables: Array.from(document.querySelectorAll("table")).map(table => ({
    caption: table.caption ? table.caption.textContent : "",
    fits: table.parentElement.scrollWidth <= table.parentElement.clientWidth,
    headers: Array.from(table.tHead.rows[0].cells).map(cell => cell.textContent),
    rows: Array.from(table.tBodies[0].rows).map(row => Array.from(row.cells).map(cell => cell.textContent)),
    values: Array.from(table.tBodies[0].rows).map(
      row => Array.from(row.cells).map(cell => cell.dataset.value === undefined ? null : Number(cell.dataset.value))),
  })),
  pageWidth: document.documentElement.scrollWidth,
  viewportWidth: window.innerWidth,
  title: document.title,
})"""


def chromium_executable() -> str:
    """The Chromium binary to drive: ``$SEPCONV_CHROMIUM``, else ``chromium`` on PATH; fails the test if none."""
    named = os.environ.get("SEPCONV_CHROMIUM")
    found = named or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found or not Path(found).exists():
        pytest.fail(
            "headless Chromium is needed for the HTML-page tests and none was found "
            f"({'SEPCONV_CHROMIUM=' + named if named else 'no chromium on PATH'}): README's test command "
            "installs Debian's package (apt-get install chromium); or deselect them with -m 'not browser'",
            pytrace=False,
        )
    return found


@dataclass
class PageView:
    """What the browser saw of one page: its requests, console errors, images, tables and layout."""

    url: str
    requests: list[str]
    errors: list[str]
    images: list[dict[str, Any]]
    tables: list[dict[str, Any]]
    page_width: int
    viewport_width: int
    title: str
    screenshot: Path

    @property
    def outside_requests(self) -> list[str]:
        """Every request other than the page file itself (``data:`` URIs make none)."""
        return [url for url in self.requests if url != self.url]


_READ_SERVED_PAGE = """async () => {
  const images = await Promise.all(Array.from(document.images).map(async image => {
    image.loading = "eager";  // a lazy image below the fold would otherwise never be fetched
    let decoded = true;
    try { await image.decode(); } catch (error) { decoded = false; }
    return {src: image.getAttribute("src") || "", decoded: decoded && image.naturalWidth > 0};
  }));
  return {
    images: images,
    links: Array.from(document.querySelectorAll("a[href]")).map(link => link.href),
    ids: Array.from(document.querySelectorAll("[id], a[name]")).map(element => element.id || element.name),
  };
}"""


@dataclass
class ServedPage:
    """What the browser saw of one page of a served site: its requests, console errors, failed responses,
    images (each ``src`` and whether it decoded), links (absolute URLs) and the ids a ``#fragment`` can
    name."""

    path: str
    requests: list[str]
    errors: list[str]
    failed_responses: list[str]  # "404 URL": what the site's own server did not have
    images: list[dict[str, Any]]
    links: list[str]
    ids: list[str]
    origin: str

    @property
    def outside_requests(self) -> list[str]:
        """Requests to anywhere but the site's own server (``data:`` and ``blob:`` URIs stay in the page)."""
        return [url for url in self.requests if not url.startswith((self.origin, "data:", "blob:", "about:"))]

    @property
    def undecoded_images(self) -> list[str]:
        """The ``src`` of each image that did not load and decode (a data URI shortened)."""
        return [image["src"][:80] for image in self.images if not image["decoded"]]


def _record_requests_and_errors(page: Any) -> tuple[list[str], list[str]]:
    """Two lists that fill as ``page`` makes requests (their URLs) and logs errors (console or uncaught)."""
    requests: list[str] = []
    errors: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    return requests, errors


def _record_failed_responses(page: Any) -> list[str]:
    """A list that fills with ``"STATUS URL"`` for each response of ``page`` with an error status."""
    failed: list[str] = []
    page.on(
        "response",
        lambda response: (
            failed.append(f"{response.status} {response.url}") if response.status >= 400 else None
        ),
    )
    return failed


class Browser:
    """One headless Chromium for a test module; each :meth:`open_page` gets a fresh, isolated context."""

    def __init__(self, browser: Any) -> None:
        self._browser = browser

    def open_page(
        self,
        path: Path,
        screenshot: Path,
        *,
        viewport: dict[str, int] = LAPTOP,
        clicks: tuple[str, ...] = (),
    ) -> PageView:
        """Load ``path``, click each selector in ``clicks`` in turn, screenshot the whole page and read it."""
        context = self._browser.new_context(viewport=viewport, offline=True, java_script_enabled=True)
        try:
            page = context.new_page()
            requests, errors = _record_requests_and_errors(page)
            url = path.resolve().as_uri()
            page.goto(url, wait_until="load")
            for selector in clicks:
                page.click(selector)
            page.screenshot(path=str(screenshot), full_page=True)
            seen = page.evaluate(_READ_PAGE)
        finally:
            context.close()
        return PageView(
            url=url,
            requests=requests,
            errors=errors,
            images=seen["images"],
            tables=seen["tables"],
            page_width=seen["pageWidth"],
            viewport_width=seen["viewportWidth"],
            title=seen["title"],
            screenshot=screenshot,
        )

    def open_site(self, base_url: str, paths: list[str], *, tabs: int = 4) -> list[ServedPage]:
        """Open each page ``base_url + path`` as a visitor of a hosted site; what each showed, in order.

        One context for all pages (the site's scripts and styles are fetched once, as a visitor's browser
        would), ``tabs`` pages loading at a time, every request recorded. Launch the browser with
        :data:`LOOPBACK_ONLY` so that a request outside the site is recorded but never sent (a route that
        aborts it would double the time).
        """
        context = self._browser.new_context(viewport=LAPTOP, java_script_enabled=True)
        try:
            opened = [context.new_page() for _ in range(max(1, min(tabs, len(paths))))]
            records = [_record_requests_and_errors(page) for page in opened]
            failures = [_record_failed_responses(page) for page in opened]
            views = []
            for start in range(0, len(paths), len(opened)):
                batch = list(zip(opened, records, failures, paths[start : start + len(opened)]))
                for page, (requests, errors), failed, path in batch:
                    for seen_so_far in (requests, errors, failed):
                        seen_so_far.clear()
                    page.goto(base_url + path, wait_until="commit")  # the others load meanwhile
                for page, (requests, errors), failed, path in batch:
                    page.wait_for_load_state("load")
                    seen = page.evaluate(_READ_SERVED_PAGE)
                    views.append(
                        ServedPage(
                            path,
                            list(requests),
                            list(errors),
                            list(failed),
                            seen["images"],
                            seen["links"],
                            seen["ids"],
                            base_url,
                        )
                    )
        finally:
            context.close()
        return views


def launch(*flags: str) -> Iterator[Browser]:
    """Start headless Chromium under Playwright (a generator for a pytest fixture); closes it after.

    ``flags``: more command-line switches for Chromium (:data:`LOOPBACK_ONLY`)."""
    executable = chromium_executable()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as error:  # installed with the test extra; its absence is a broken setup, not a skip
        pytest.fail(f"Playwright is needed for the HTML-page tests: pip install -e '.[test]' ({error})")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=[*CHROMIUM_FLAGS, *flags]
        )
        try:
            yield Browser(browser)
        finally:
            browser.close()


def assert_healthy(view: PageView, *, images: int, tables: int, viewport: dict[str, int]) -> None:
    """The checks every page must pass, whatever it shows: no request, no console error, ``images`` images
    that decode and fit, ``tables`` tables, nothing wider than the viewport, a screenshot that is not blank."""
    assert view.outside_requests == [], "the page asked the network for something"
    assert view.errors == [], "console errors (a CSP violation or a script error shows here)"
    assert len(view.images) == images and len(view.tables) == tables
    for image in view.images:
        assert image["complete"] and image["naturalWidth"] > 0 and image["naturalHeight"] > 0, image["alt"]
        assert 0 < image["shownWidth"] <= viewport["width"], image["alt"]
    # Wide tables scroll inside their own box; the page itself never scrolls sideways.
    assert view.viewport_width == viewport["width"] and view.page_width <= viewport["width"]
    shot = PILImage.open(view.screenshot)
    assert shot.format == "PNG" and shot.width == viewport["width"] and shot.height >= viewport["height"]
    # A blank or failed render is one colour; a page of text, tables and plots has many.
    assert len(shot.convert("RGB").getcolors(maxcolors=1 << 16) or range(1 << 16)) > 50
