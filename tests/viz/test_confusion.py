"""The confusion-matrix plot: a PNG at exactly the path given, drawn without touching matplotlib's state."""

from __future__ import annotations

import sys

import matplotlib
import torch
from PIL import Image

from sepconv.train.evaluation import Evaluation
from sepconv.viz.confusion import plot_confusion_matrix


def test_plot_writes_a_png_at_the_path_and_leaves_matplotlib_alone(tmp_path, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("library code must not switch matplotlib's backend")

    monkeypatch.setattr(matplotlib, "use", forbidden)
    pyplot = sys.modules.get("matplotlib.pyplot")
    figures_before = pyplot.get_fignums() if pyplot else None
    evaluation = Evaluation(torch.arange(36).reshape(6, 6), [f"class {index}" for index in range(6)])
    path = plot_confusion_matrix(evaluation, tmp_path / "confusion")  # no suffix: written as named
    assert path == tmp_path / "confusion"
    with Image.open(path) as image:
        assert image.format == "PNG"
        # The matrix is max(4, 0.45 * 6 classes + 2) = 4.7 inches square, plus 0.8 inch for the colour
        # bar, at 100 dpi.
        assert image.size == (550, 470)
    if pyplot is None:
        assert "matplotlib.pyplot" not in sys.modules  # the object API needs no pyplot
    else:
        assert pyplot.get_fignums() == figures_before  # no figure left open in pyplot's list
