"""Drawing an animation's frames with matplotlib's object API: one figure per step, updated frame by frame.

Each frame shows the input channels side by side (padding grey, the kernel's window lit, channels the
output does not read faded) and the output channel being written, its finished cells numbered. The
frames come from :mod:`sepconv.viz.animation_plan`; matplotlib is imported only when drawing starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sepconv.viz.animation_plan import ConvAnimation, ConvStep, Frame

__all__ = ["MAX_DRAWN_CHANNELS", "StepRenderer", "canvas_size", "require_render_memory"]

# Numbers are written into the cells of grids up to this size; larger grids would be unreadable.
MAX_NUMBERED_GRID = 12
#: Panels drawn side by side in one frame: input channels plus the output channel.
MAX_DRAWN_CHANNELS = 8

_CELL_INCHES = 0.26


class StepRenderer:
    """One figure per step, updated in place frame after frame (its layout frozen after the first draw,
    so panels do not jump between frames and each frame costs one canvas draw)."""

    def __init__(self, step: ConvStep) -> None:
        import numpy as np
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.colors import to_rgb

        from sepconv.viz.style import color, new_figure

        self.step = step
        self.np = np
        channels, height, width = step.grid.shape
        out_height, out_width = step.output.shape[-2:]
        if channels + 1 > MAX_DRAWN_CHANNELS:
            raise ValueError(
                f"can draw at most {MAX_DRAWN_CHANNELS - 1} input channels side by side, the {step.name} step has {channels}"
            )
        self.white = np.ones(3)
        self.padding_rgb = np.array(to_rgb("#D9D9D9"))
        self.window_rgb = np.array(to_rgb(color(0)))
        self.written_rgb = 0.6 + 0.4 * np.array(to_rgb(color(1)))
        self.current_rgb = np.array(to_rgb(color(1)))
        columns = [width] * channels + [out_width]
        self.figure = new_figure(*_figure_inches((channels, height, width), (out_height, out_width)))
        FigureCanvasAgg(self.figure)
        axes = self.figure.subplots(1, len(columns), width_ratios=columns, squeeze=False)[0]
        numbered_input = max(height, width) <= MAX_NUMBERED_GRID
        numbered_output = max(out_height, out_width) <= MAX_NUMBERED_GRID
        font = 7 if max(height, width) <= 8 else 5
        self.input_images, self.output_texts = [], []
        for channel, ax in enumerate(axes[:-1]):
            self.input_images.append(ax.imshow(self._input_colors(channel, ()), interpolation="nearest"))
            self._grid_lines(ax, height, width)
            self._label(ax, f"in {channel}")
            if numbered_input:
                for row in range(height):
                    for col in range(width):
                        text = _format_number(float(step.grid[channel, row, col]))
                        ax.text(col, row, text, ha="center", va="center", fontsize=font)
        output_ax = axes[-1]
        self.output_ax = output_ax
        self.output_image = output_ax.imshow(np.ones((out_height, out_width, 3)), interpolation="nearest")
        self._grid_lines(output_ax, out_height, out_width)
        self.output_label = self._label(output_ax, "out")
        if numbered_output:
            self.output_texts = [
                [
                    output_ax.text(col, row, "", ha="center", va="center", fontsize=font)
                    for col in range(out_width)
                ]
                for row in range(out_height)
            ]
        self.title = self.figure.suptitle("", fontsize=8)
        # The channel labels sit above the axes, outside what the layout reserves: leave them room.
        self.figure.get_layout_engine().set(h_pad=0.12, w_pad=0.1)
        self.first_draw = True

    @staticmethod
    def _grid_lines(ax: Any, height: int, width: int) -> None:
        # Cell borders as two line collections on a bare axes: ticks and spines are slow to lay out
        # on every frame and say nothing here.
        ax.set_axis_off()
        # Whole cells only, square, the box shrunk to fit (a panel shorter than its neighbours was
        # otherwise drawn with its right column cut off).
        ax.set(xlim=(-0.5, width - 0.5), ylim=(height - 0.5, -0.5))
        ax.set_aspect("equal", adjustable="box")
        # The outer borders lie on the axes' edge: unclipped, they are drawn whole.
        lines = {"color": "#808080", "linewidth": 0.5, "clip_on": False}
        ax.hlines([r - 0.5 for r in range(height + 1)], -0.5, width - 0.5, **lines)
        ax.vlines([c - 0.5 for c in range(width + 1)], -0.5, height - 0.5, **lines)

    @staticmethod
    def _label(ax: Any, text: str) -> Any:
        return ax.text(0.5, 1.02, text, transform=ax.transAxes, ha="center", va="bottom", fontsize=8)

    def _input_colors(self, channel: int, window: Sequence[tuple[int, int]]) -> Any:
        np = self.np
        mask = self.step.is_padding.numpy()
        colors = np.where(mask[..., None], self.padding_rgb, self.white)
        for row, col in window:
            colors[row, col] = 0.45 * colors[row, col] + 0.55 * self.window_rgb
        return colors

    def show(self, frame: Frame) -> None:
        """Draw ``frame``: light the window it reads, fill the outputs written so far, mark the current."""
        np = self.np
        step = self.step
        for channel, image in enumerate(self.input_images):
            read = channel in frame.in_channels
            colors = self._input_colors(channel, frame.window if read else ())
            # Channels this output does not read are faded, so groups show as blocks of lit panels.
            image.set_data(colors if read else 0.35 * colors + 0.65 * np.array([0.93, 0.93, 0.93]))
        out_height, out_width = step.output.shape[-2:]
        colors = np.ones((out_height, out_width, 3))
        row, col = frame.out_position
        written = set()
        for other in step.frames:  # frames run in writing order: everything before this one is done
            if other.out_channel != frame.out_channel:
                continue
            written.add(other.out_position)
            if other.out_position == (row, col):
                break
            colors[other.out_position] = self.written_rgb
        colors[row, col] = self.current_rgb
        self.output_image.set_data(colors)
        for r, texts in enumerate(self.output_texts):
            for c, text in enumerate(texts):
                value = float(step.output[frame.out_channel, r, c])
                text.set_text(_format_number(value) if (r, c) in written else "")
        self.output_label.set_text(f"out {frame.out_channel}")
        channels = ",".join(map(str, frame.in_channels))
        self.title.set_text(
            f"{step.name}: out[{frame.out_channel}][{row},{col}] = {_format_number(frame.value)}  (reads in {channels})"
        )

    def render(self, frame: Frame) -> Any:
        """Frame as an RGB ``uint8`` array."""
        self.show(frame)
        self.figure.canvas.draw()
        if self.first_draw:
            self.figure.set_layout_engine("none")  # keep the first frame's layout for every frame
            self.first_draw = False
        return self.np.asarray(self.figure.canvas.buffer_rgba())[..., :3].copy()


def canvas_size(step: ConvStep) -> tuple[int, int]:
    """(width, height) in pixels of the figure :class:`StepRenderer` draws ``step`` on."""
    from matplotlib import rcParams

    width, height = _figure_inches(tuple(step.grid.shape), tuple(step.output.shape[-2:]))
    dpi = float(rcParams["figure.dpi"])  # new_figure keeps matplotlib's figure dpi
    return int(width * dpi), int(height * dpi)


def _figure_inches(grid_shape: Sequence[int], output_size: Sequence[int]) -> tuple[float, float]:
    """(width, height) in inches of a step's figure: one panel per input channel and one for the output."""
    channels, height, width = grid_shape
    out_height, out_width = output_size
    columns = [width] * channels + [out_width]
    figure_width = _CELL_INCHES * (sum(columns) + 1.5 * len(columns)) + 1.6
    figure_height = _CELL_INCHES * max(height, out_height) + 1.2
    return figure_width, figure_height


def require_render_memory(animation: ConvAnimation) -> None:
    """Refuse an animation whose frames cannot fit in memory, before drawing the first.

    The estimate counts the RGBA canvas of the largest step (4 bytes a pixel) and the RGB copy of
    every frame kept for encoding (3 bytes a pixel); a lower bound of what drawing allocates
    (matplotlib's own buffers and the encoder's are left out).
    """
    from sepconv.machine import require_memory

    if any(step.grid.shape[0] + 1 > MAX_DRAWN_CHANNELS for step in animation.steps):
        return  # the renderer refuses it, naming the channel count
    sizes = [canvas_size(step) for step in animation.steps]
    pixels = [width * height for width, height in sizes]
    frames = sum(len(step.frames) * count * 3 for step, count in zip(animation.steps, pixels))
    needed = frames + 4 * max(pixels)
    parameter, value = animation.sized_by or ("animation", f"{len(animation.frames)} frames")
    width, height = max(sizes, key=lambda size: size[0] * size[1])
    require_memory(
        parameter, value, needed, what=f"{len(animation.frames)} frames of {width}x{height} pixels"
    )


def _format_number(value: float) -> str:
    if value == int(value):
        return str(int(value))
    return f"{value:.2g}"
