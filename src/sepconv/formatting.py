"""Numbers and tables for people, one way each: every report sepconv prints is written with these.

A count is exact with thousands separators (``575,594``) or short with a unit (``575.6K``), a time in
milliseconds has a fixed number of decimals (the column or sentence names the unit), a size is in
binary units (``3.0 GiB``), a ratio is ``8.04x`` whichever way round it is, a fraction is a percent.
A :class:`Table` (headers, rows of text cells, one alignment per column) renders as plain text,
markdown or a ``rich`` table, so every report's table looks the same in every form. JSON documents
keep exact values; these are for what people read. Torch-free (the CLI formats before any heavy
import); ``rich`` is imported only by :meth:`Table.to_rich`.

>>> format_count(575_594), short_count(575_594), format_ratio(575_594 / 71_426), format_ms(6.8771)
('575,594', '575.6K', '8.06x', '6.877')
>>> print(Table(["model", "params"], [["standard", "575,594"], ["separable", "72,266"]]).to_text())
model       params
---------  -------
standard   575,594
separable   72,266
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Table",
    "format_bytes",
    "format_count",
    "format_ms",
    "format_percent",
    "format_ratio",
    "ratio_of",
    "short_count",
]


def format_count(value: int) -> str:
    """An exact count with thousands separators: ``format_count(575594)`` is ``'575,594'``."""
    return f"{value:,}"


def short_count(value: int) -> str:
    """A count with a K/M/G/T suffix, for tables where magnitudes matter more than digits.

    Two decimals below 100 of the unit, one above (three significant figures or more).

    >>> [short_count(n) for n in (950, 3_504_872, 300_774_272, 4_089_184_256)]
    ['950', '3.50M', '300.8M', '4.09G']
    """
    for threshold, suffix in ((10**12, "T"), (10**9, "G"), (10**6, "M"), (10**3, "K")):
        if abs(value) >= threshold:
            scaled = value / threshold
            return f"{scaled:.2f}{suffix}" if abs(scaled) < 100 else f"{scaled:.1f}{suffix}"
    return str(value)


def format_ms(value: float, decimals: int = 3) -> str:
    """Milliseconds with ``decimals`` decimals (3: a microsecond), without the unit the context names.

    >>> format_ms(6.87712), format_ms(95.984, decimals=2)
    ('6.877', '95.98')
    """
    return f"{value:.{decimals}f}"


def format_bytes(count: float) -> str:
    """A byte count in binary units: ``format_bytes(3 * 2**30)`` is ``'3.0 GiB'``.

    >>> format_bytes(512), format_bytes(1536), format_bytes(3 * 2**30), format_bytes(2.0**80)
    ('512 B', '1.5 KiB', '3.0 GiB', '1.1e+12 TiB')
    """
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    value, unit = float(count), 0
    while value >= 1024 and unit < len(units) - 1:
        value /= 1024
        unit += 1
    if unit == 0:
        return f"{int(value)} B"
    return f"{value:.1f} {units[unit]}" if value < 10_000 else f"{value:.1e} {units[unit]}"


def format_ratio(value: float) -> str:
    """A ratio as ``8.04x``: two decimals, or two significant digits below 0.1 (so it never reads 0.00x).

    >>> format_ratio(8.0427), format_ratio(0.1234), format_ratio(0.0123), format_ratio(0)
    ('8.04x', '0.12x', '0.012x', '0.00x')
    """
    if 0 < abs(value) < 0.1:
        return f"{value:.2g}x"
    return f"{value:.2f}x"


def ratio_of(numerator: float, denominator: float) -> str:
    """``numerator / denominator`` as :func:`format_ratio` writes it; ``'-'`` when the denominator is 0.

    >>> ratio_of(58_031_104, 7_215_360), ratio_of(3, 0)
    ('8.04x', '-')
    """
    return format_ratio(numerator / denominator) if denominator else "-"


def format_percent(value: float | None, decimals: int = 2) -> str:
    """A fraction as a percent (``0.983`` is ``'98.30%'``); ``'-'`` for a value not measured."""
    return "-" if value is None else f"{value:.{decimals}%}"


@dataclass(frozen=True)
class Table:
    """A table of text cells, rendered the same way by every report: plain text, markdown or rich.

    ``align`` has one letter per column, ``"l"`` or ``"r"``; by default the first column (the row
    labels) is left-aligned and the rest (numbers) right-aligned. ``title`` is printed above.
    """

    headers: Sequence[str]
    rows: Sequence[Sequence[str]]
    align: str = ""
    title: str | None = None
    _alignment: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        alignment = self.align or "l" + "r" * (len(self.headers) - 1)
        if len(alignment) != len(self.headers) or set(alignment) - {"l", "r"}:
            raise ValueError(
                f"align must be one 'l' or 'r' per column ({len(self.headers)}), got {self.align!r}"
            )
        for row in self.rows:
            if len(row) != len(self.headers):
                raise ValueError(f"each row must have {len(self.headers)} cells, got {list(row)!r}")
        object.__setattr__(self, "_alignment", alignment)

    def to_text(self) -> str:
        """Fixed-width columns two spaces apart, a rule of dashes under the header, no trailing spaces."""
        lines = [list(self.headers), *(list(row) for row in self.rows)]
        widths = [max(len(line[column]) for line in lines) for column in range(len(self.headers))]

        def text_line(cells: Sequence[str]) -> str:
            padded = [
                cell.ljust(width) if side == "l" else cell.rjust(width)
                for cell, width, side in zip(cells, widths, self._alignment, strict=True)
            ]
            return "  ".join(padded).rstrip()

        rule = "  ".join("-" * width for width in widths)
        body = [text_line(lines[0]), rule, *(text_line(line) for line in lines[1:])]
        return "\n".join([self.title, *body] if self.title else body)

    def to_markdown(self) -> str:
        """A GitHub-flavoured markdown table (``|`` in a cell escaped), the title above it in bold."""

        def markdown_line(cells: Sequence[str]) -> str:
            return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

        rule = "|" + "|".join("---:" if side == "r" else ":---" for side in self._alignment) + "|"
        body = [markdown_line(self.headers), rule, *(markdown_line(row) for row in self.rows)]
        return "\n".join([f"**{self.title}**", "", *body] if self.title else body)

    def to_rich(self) -> Any:
        """A ``rich.table.Table`` with the same cells and alignment (the label column never wraps).

        Cells are text, never markup: a layer named ``[red]x`` (names come from users' models) shows as
        written.
        """
        from rich.markup import escape
        from rich.table import Table as RichTable

        table = RichTable(title=None if self.title is None else escape(self.title))
        for index, (header, side) in enumerate(zip(self.headers, self._alignment, strict=True)):
            table.add_column(escape(header), justify="left" if side == "l" else "right", no_wrap=index == 0)
        for row in self.rows:
            table.add_row(*(escape(cell) for cell in row))
        return table
