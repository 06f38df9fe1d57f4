"""An HTML page read without a browser: what it loads (every src/href), its images and its tables' cells.

The cheap counterpart of :mod:`tests.helpers.browser`: the source as written, parsed by the standard
library, for tests that check numbers and escaping in many pages quickly.
"""

from __future__ import annotations

from html.parser import HTMLParser

__all__ = ["PageParts", "parse_page"]


class PageParts(HTMLParser):
    """Collects what a page loads and shows: resources, images, tables and their cells, and its text
    (``text``: every piece of text outside scripts and styles, in order); ``ids``: the anchors a link's
    ``#fragment`` can name (every ``id``, and the ``name`` of an ``<a>``)."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.ids: list[str] = []
        self._hidden = 0
        self.resources: list[str] = []
        self.images: list[str] = []
        self.tables: list[list[list[tuple[str, dict]]]] = []
        self._cell: tuple[list[str], dict] | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attributes = dict(attrs)
        if attributes.get("id"):
            self.ids.append(attributes["id"])
        if tag == "a" and attributes.get("name"):
            self.ids.append(attributes["name"])
        for name in ("src", "href", "data", "poster", "srcset"):
            if name in attributes:
                self.resources.append(attributes[name])
        if tag == "img":
            self.images.append(attributes.get("src", ""))
        if tag == "table":
            self.tables.append([])
        if tag == "tr" and self.tables:
            self.tables[-1].append([])
        if tag in ("td", "th"):
            self._cell = ([], attributes)
        if tag in ("script", "style"):
            self._hidden += 1

    def handle_data(self, data: str) -> None:
        if not self._hidden and data.strip():
            self.text.append(data.strip())
        if self._cell is not None:
            self._cell[0].append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._hidden -= 1
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append(("".join(self._cell[0]), self._cell[1]))
            self._cell = None


def parse_page(html: str) -> PageParts:
    """``html`` read by :class:`PageParts`."""
    page = PageParts()
    page.feed(html)
    return page
