"""The confusion matrix of an evaluation as a PNG heat map (``sepconv evaluate --confusion-png``).

Plotting lives in :mod:`sepconv.viz`, beside the style it uses, so that training (which computes the
matrix, :mod:`sepconv.train.evaluation`) does not import the plotting package: train and viz are
peers. Anything with the :class:`ConfusionCounts` attributes can be drawn, an
:class:`~sepconv.train.evaluation.Evaluation` among them.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Protocol

from sepconv.formatting import format_percent
from sepconv.io.atomic import atomic_write_bytes
from sepconv.viz.style import new_figure

__all__ = ["ConfusionCounts", "plot_confusion_matrix"]


class ConfusionCounts(Protocol):
    """``confusion[true, predicted]`` counts (a tensor or array) with the class names and totals."""

    @property
    def confusion(self) -> Any:
        """The counts, ``confusion[true, predicted]``, as a square tensor or array."""

    @property
    def class_names(self) -> list[str]:
        """One name per class, in the order of the matrix's rows."""

    @property
    def accuracy(self) -> float:
        """The fraction of samples on the diagonal, from 0 to 1."""

    @property
    def num_samples(self) -> int:
        """The matrix's total count."""


def plot_confusion_matrix(evaluation: ConfusionCounts, path: str | Path, *, title: str = "") -> Path:
    """Write the confusion matrix as a PNG heat map with the counts in the cells, at exactly ``path``.

    Drawn in sepconv's figure style with matplotlib's object API (no ``pyplot`` state), with a
    single-hue sequential colour map that reads the same under colour-vision deficiencies, and
    written atomically: an interrupted write leaves no partial file.
    """
    import numpy

    counts = numpy.asarray(evaluation.confusion)
    size = max(4.0, 0.45 * len(evaluation.class_names) + 2)
    figure = new_figure(size + 0.8, size)
    axes = figure.subplots()
    heat = axes.imshow(counts, cmap="Blues")
    figure.colorbar(heat, ax=axes, shrink=0.8, label="images")
    ticks = range(len(evaluation.class_names))
    axes.set_xticks(ticks, evaluation.class_names, rotation=45, ha="right")
    axes.set_yticks(ticks, evaluation.class_names)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(
        title or f"accuracy {format_percent(evaluation.accuracy)} on {evaluation.num_samples} samples"
    )
    threshold = counts.max() / 2 if counts.size else 0
    if len(evaluation.class_names) <= 30:
        for row in ticks:
            for column in ticks:
                color = "white" if counts[row, column] > threshold else "black"
                axes.text(
                    column, row, str(counts[row, column]), ha="center", va="center", fontsize=8, color=color
                )
    buffer = io.BytesIO()
    figure.savefig(buffer, dpi=100, format="png")  # PNG whatever the suffix: the path is used as given
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(path, buffer.getvalue())
