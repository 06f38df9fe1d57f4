"""Pictures of what convolutions do: animations, channel diagrams, receptive-field maps, HTML reports.

Everything drawn is computed by the real PyTorch operation or by :mod:`sepconv.arithmetic`, so a
picture cannot disagree with the code. Plots use matplotlib's object API (``matplotlib.figure.Figure``),
never pyplot's global state, and one colour-blind-safe style (:mod:`sepconv.viz.style`). matplotlib is
imported inside the functions that draw, so ``import sepconv.viz`` stays cheap.
"""

from sepconv.viz.animate import animate_conv
from sepconv.viz.diagram import diagram
from sepconv.viz.fields import receptive_field_map

__all__ = ["animate_conv", "diagram", "receptive_field_map"]
