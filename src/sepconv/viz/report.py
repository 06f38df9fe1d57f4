"""One self-contained HTML page of tables and plots: what ``--html`` writes for summary, compare and the demo.

The page is rendered from a Jinja2 template (``templates/report.html``), never by string concatenation,
with autoescaping on, so a layer or model name cannot inject markup. Plots are embedded as ``data:``
URIs (PNG or SVG), tables sort by a click on a header (numbers by value, text alphabetically) with a
few lines of inline script, and a Content-Security-Policy forbids every external resource, so the
page opens offline, from an e-mail attachment or a CI artifact, and makes no network request.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sepconv.io.atomic import PathLike, atomic_write_bytes

__all__ = ["Cell", "Image", "Section", "Table", "figure_image", "render_html", "write_html"]


@dataclass(frozen=True)
class Cell:
    """One table cell: the text shown and, for numbers, the value it sorts by."""

    text: str
    value: float | None = None


@dataclass(frozen=True)
class Table:
    """A table: ``rows`` of cells, each a string, an int/float (shown formatted, sorted by value) or a Cell."""

    headers: Sequence[str]
    rows: Sequence[Sequence[Any]]
    title: str = ""
    caption: str = ""

    @property
    def cells(self) -> list[list[Cell]]:
        """The rows as :class:`Cell` objects, numbers formatted with thousands separators."""
        return [[_cell(value) for value in row] for row in self.rows]

    @property
    def numeric(self) -> list[bool]:
        """Per column, whether it holds numbers (right-aligned); blanks and a few text cells may sit among them."""
        cells = self.cells
        numeric = []
        for index in range(len(self.headers)):
            column = [row[index] for row in cells if index < len(row) and row[index].text]
            numbers = sum(cell.value is not None for cell in column)
            numeric.append(numbers > 0 and numbers >= len(column) / 2)
        return numeric


@dataclass(frozen=True)
class Image:
    """A picture embedded in the page as a ``data:`` URI (PNG or SVG bytes)."""

    title: str
    data: bytes
    mime: str = "image/png"
    caption: str = ""

    @property
    def data_uri(self) -> str:
        """The image as a ``data`` URI, so the HTML report embeds it and stays one file."""
        return f"data:{self.mime};base64,{base64.b64encode(self.data).decode('ascii')}"


@dataclass(frozen=True)
class Section:
    """A titled part of the page: paragraphs, then tables, then images."""

    title: str
    paragraphs: Sequence[str] = field(default_factory=tuple)
    tables: Sequence[Table] = field(default_factory=tuple)
    images: Sequence[Image] = field(default_factory=tuple)


def _cell(value: Any) -> Cell:
    if isinstance(value, Cell):
        return value
    if isinstance(value, bool) or value is None:
        return Cell("" if value is None else str(value))
    if isinstance(value, int):
        return Cell(f"{value:,}", float(value))
    if isinstance(value, float):
        if not math.isfinite(value):
            return Cell(str(value))
        return Cell(f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}", value)
    return Cell(str(value))


def figure_image(figure: Any, title: str, *, caption: str = "", dpi: int = 110) -> Image:
    """A matplotlib Figure as an embeddable PNG :class:`Image`."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return Image(title=title, data=buffer.getvalue(), caption=caption)


def render_html(title: str, sections: Sequence[Section], *, subtitle: str = "") -> str:
    """The page as a string (UTF-8 HTML5), rendered from sepconv's template with autoescaping."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    from sepconv import __version__

    environment = Environment(
        loader=PackageLoader("sepconv.viz", "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    template = environment.get_template("report.html")
    return template.render(title=title, subtitle=subtitle, sections=list(sections), version=__version__)


def write_html(path: PathLike, title: str, sections: Sequence[Section], *, subtitle: str = "") -> Path:
    """Render the page and write it atomically to ``path`` (no partial file on error)."""
    target = Path(path)
    if target.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"the HTML report path must end in .html, got {str(path)!r}")
    return atomic_write_bytes(target, render_html(title, sections, subtitle=subtitle).encode("utf-8"))
