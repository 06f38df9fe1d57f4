"""Pictures of what convolutions do: animations, channel diagrams, receptive-field maps, HTML reports.

Everything drawn is computed by the real PyTorch operation or by :mod:`sepconv.arithmetic`, so a
picture cannot disagree with the code. Plots use matplotlib's object API (``matplotlib.figure.Figure``),
never pyplot's global state, and one colour-blind-safe style (:mod:`sepconv.viz.style`). matplotlib is
imported inside the functions that draw, and torch when a name below is first used, so
``import sepconv.viz`` stays cheap.
"""

from typing import TYPE_CHECKING

from sepconv._lazy import lazy_exports

# Imported now: it is torch-free, and the function must shadow its submodule of the same name.
from sepconv.viz.diagram import diagram

if TYPE_CHECKING:  # what static type checkers see; at run time these come from __getattr__
    from sepconv.viz.animate import animate_conv
    from sepconv.viz.fields import receptive_field_map

# Imported on first use: the animation and the receptive-field map import torch, and
# `sepconv diagram --help` (which reads sepconv.viz.diagram's kinds) must not.
__getattr__, __dir__ = lazy_exports(
    __name__,
    {"animate_conv": "sepconv.viz.animate", "receptive_field_map": "sepconv.viz.fields"},
)

__all__ = ["animate_conv", "diagram", "receptive_field_map"]
