"""One look for every sepconv picture: the Okabe-Ito colour-blind-safe palette, fonts, and safe saving.

Okabe & Ito's eight colours ("Color Universal Design", 2008) stay distinguishable under the common
colour-vision deficiencies; every picture draws from :data:`PALETTE` in its order, so "the first model"
or "group 1" has the same colour everywhere. :func:`save_figure` writes atomically, so a failed or
interrupted render never leaves a partial file.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from sepconv.io.atomic import PathLike, atomic_write_bytes

if TYPE_CHECKING:  # matplotlib is imported only where a figure is drawn
    from matplotlib.typing import RcKeyType

__all__ = ["FIGURE_FORMATS", "PALETTE", "color", "new_figure", "save_figure"]

#: Okabe-Ito, in their published order minus black (kept for text and outlines).
PALETTE = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#999999")
#: The file formats a figure can be written in.
FIGURE_FORMATS = ("png", "svg")
_RC: dict[RcKeyType, Any] = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 9,
}


def color(index: int) -> str:
    """The ``index``-th palette colour, cycling (group, channel or model number ``index``)."""
    return PALETTE[index % len(PALETTE)]


def new_figure(width: float, height: float) -> Any:
    """A ``matplotlib.figure.Figure`` of ``width`` x ``height`` inches in sepconv's style (no pyplot state)."""
    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context(_RC):
        figure = Figure(figsize=(width, height), layout="constrained")
    return figure


def save_figure(figure: Any, path: PathLike, *, dpi: int = 120) -> Path:
    """Write ``figure`` as PNG or SVG (by suffix) atomically; a ValueError names an unknown suffix."""
    import io

    target = Path(path)
    kind = target.suffix.lower().lstrip(".")
    if kind not in FIGURE_FORMATS:
        raise ValueError(f"path must end in .png or .svg, got {str(path)!r}")
    buffer = io.BytesIO()
    figure.savefig(buffer, format=kind, dpi=dpi)
    return atomic_write_bytes(target, buffer.getvalue())
