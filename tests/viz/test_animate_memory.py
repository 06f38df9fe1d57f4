"""animate's memory checks: the planned grid and the drawn frames, estimated from the geometry and refused
before the allocation, naming the geometry parameter that made them large."""

from __future__ import annotations

import pytest

import sepconv.machine
from sepconv.machine import MemoryLimitError
from sepconv.viz import animation_render
from sepconv.viz.animate import plan_animation, write_animation


def limit(monkeypatch, available: int) -> None:
    monkeypatch.setattr(sepconv.machine, "available_memory_bytes", lambda: available)


def test_the_planned_grid_is_counted_by_hand(monkeypatch):
    # 5x5 input, 3x3 kernel at dilation 1000, 'same': 2000 padding pixels per axis, a 2005x2005
    # float64 grid beside the 5x5 float64 input: 8 * (25 + 2005**2) = 32,160,400 bytes.
    needed = 8 * (25 + 2005**2)
    limit(monkeypatch, needed - 1)
    with pytest.raises(
        MemoryLimitError, match=r"^dilation=1000 needs about 30\.7 MiB for the 2005x2005 grid"
    ):
        plan_animation(input_size=5, kernel_size=3, dilation=1000, padding="same")
    limit(monkeypatch, needed)
    animation = plan_animation(input_size=5, kernel_size=3, dilation=1000, padding="same")
    assert animation.steps[0].grid.shape == (1, 2005, 2005)
    assert animation.sized_by == ("dilation", 1000)


@pytest.mark.parametrize(
    ("geometry", "named"),
    [
        ({"input_size": 3000}, "input_size=3000"),
        ({"input_size": 5, "padding": 1500}, "padding=1500"),
        ({"input_size": 5, "kernel_size": 3001, "padding": "same"}, "kernel_size=3001"),
        ({"input_size": 3, "stride": 1500, "transposed": True}, "stride=1500"),
        ({"input_size": 3, "dilation": 1500, "transposed": True}, "dilation=1500"),
    ],
)
def test_the_parameter_that_sized_the_grid_is_named(monkeypatch, geometry, named):
    limit(monkeypatch, 2**20)
    with pytest.raises(MemoryLimitError, match=rf"^{named} needs about .* more than the 1\.0 MiB"):
        plan_animation(**geometry)


def test_the_frames_estimate_is_the_real_canvas_and_refuses_before_drawing(monkeypatch, tmp_path):
    animation = plan_animation(input_size=4, kernel_size=3, seed=0)
    step = animation.steps[0]
    drawn = animation_render.StepRenderer(step).render(step.frames[0])  # the real canvas, as an RGB array
    width, height = animation_render.canvas_size(step)
    assert drawn.shape == (height, width, 3)
    # 4 frames kept as RGB copies, and the RGBA canvas they are drawn on.
    needed = 4 * width * height * 3 + width * height * 4
    limit(monkeypatch, needed - 1)
    drawn_frames = []
    monkeypatch.setattr(
        animation_render.StepRenderer, "render", lambda self, frame: drawn_frames.append(frame)
    )
    target = tmp_path / "conv.gif"
    with pytest.raises(
        MemoryLimitError, match=rf"^input_size=4 needs about .* for 4 frames of {width}x{height} pixels"
    ):
        write_animation(animation, target)
    assert drawn_frames == [] and not target.exists()
