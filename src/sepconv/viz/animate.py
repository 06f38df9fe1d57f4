"""Animations of a 2-D convolution sliding over its padded, dilated input, frame by frame.

Computing and drawing are separate. :func:`conv_step`, :func:`conv_transpose_step` and
:func:`plan_animation` return the frames as data (which output cell is written, which input cells and
channels the kernel reads, the value written); every value is read from the output of the real PyTorch
operation (``F.conv2d`` / ``F.conv_transpose2d``) on the same tensors, and cross-checked against the sum
over the drawn window, so a picture cannot disagree with the operator. :func:`write_animation` draws the
frames with matplotlib's object API and writes an animated GIF (or an MP4 when ``ffmpeg`` is available)
atomically. A transposed convolution is shown as its zero-insertion view: the input with ``stride - 1``
zeros between pixels, padded by ``dilation * (kernel - 1) - padding`` (plus ``output_padding`` at the
end), then a stride-1 convolution with the flipped kernel.

>>> animation = plan_animation(input_size=4, kernel_size=3, seed=0)
>>> len(animation.frames), animation.steps[0].output.shape
(4, torch.Size([1, 2, 2]))
"""

from __future__ import annotations

import io
import math
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from sepconv import arithmetic
from sepconv.io.atomic import PathLike, atomic_write_bytes, check_output_path

__all__ = [
    "MAX_FRAMES",
    "ConvAnimation",
    "ConvStep",
    "Frame",
    "animate_conv",
    "conv_step",
    "conv_transpose_step",
    "draw_frame",
    "plan_animation",
    "write_animation",
]

Pair = int | tuple[int, int]
PaddingArg = int | tuple[int, int] | str
Progress = Callable[[int, int], None]

# Beyond this many frames a GIF stops being something one watches (and takes minutes to render).
MAX_FRAMES = 600
# Numbers are written into the cells of grids up to this size; larger grids would be unreadable.
MAX_NUMBERED_GRID = 12
# Panels drawn side by side in one frame: input channels plus the output channel.
MAX_DRAWN_CHANNELS = 8
ANIMATION_FORMATS = ("gif", "mp4")

_CELL_INCHES = 0.26
_DPI = 72


@dataclass(frozen=True)
class Frame:
    """One output value being written.

    window: the (row, col) cells of the shown grid (padded, or zero-inserted for a transposed
    convolution) that the kernel taps read, in kernel order; in_channels: the input channels read;
    value: ``output[out_channel, row, col]`` of the real operator.
    """

    step: str
    out_channel: int
    out_position: tuple[int, int]
    window: tuple[tuple[int, int], ...]
    in_channels: tuple[int, ...]
    value: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "out_channel": self.out_channel,
            "out_position": list(self.out_position),
            "window": [list(cell) for cell in self.window],
            "in_channels": list(self.in_channels),
            "value": self.value,
        }


@dataclass(frozen=True)
class ConvStep:
    """One convolution as it is drawn: the shown input grid, the kernel applied to it, and the frames.

    grid: (C_in, H, W) input as the kernel sees it (padding and inserted zeros included); is_padding:
    (H, W), True on cells that are not input pixels; kernel: (C_out, C_in / groups, kh, kw) as applied
    to ``grid`` (flipped and transposed for a transposed convolution); output: (C_out, H_out, W_out)
    from the real operator; stride and dilation are those of the shown (stride-1 when transposed) view.
    """

    name: str
    grid: torch.Tensor
    is_padding: torch.Tensor
    kernel: torch.Tensor
    output: torch.Tensor
    stride: tuple[int, int]
    dilation: tuple[int, int]
    groups: int
    frames: tuple[Frame, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "grid": self.grid.tolist(),
            "is_padding": self.is_padding.tolist(),
            "kernel": self.kernel.tolist(),
            "output": self.output.tolist(),
            "stride": list(self.stride),
            "dilation": list(self.dilation),
            "groups": self.groups,
            "frames": [frame.to_dict() for frame in self.frames],
        }


@dataclass(frozen=True)
class ConvAnimation:
    """The steps of one animation (one, or depthwise then pointwise for a separable convolution).

    sized_by: the geometry parameter and value that made the drawn grid largest, which a memory
    refusal of :func:`write_animation` names (``None``: name the animation itself).
    """

    steps: tuple[ConvStep, ...]
    sized_by: tuple[str, Any] | None = None

    @property
    def frames(self) -> list[Frame]:
        return [frame for step in self.steps for frame in step.frames]

    @property
    def output(self) -> torch.Tensor:
        """The final output (C_out, H_out, W_out): that of the last step."""
        return self.steps[-1].output

    def to_dict(self) -> dict[str, Any]:
        return {"steps": [step.to_dict() for step in self.steps], "output": self.output.tolist()}


def conv_step(
    input: torch.Tensor,
    weight: torch.Tensor,
    *,
    stride: Pair = 1,
    padding: PaddingArg = 0,
    dilation: Pair = 1,
    groups: int = 1,
    name: str = "conv",
) -> ConvStep:
    """Frames of ``F.conv2d(input, weight, ...)``; ``padding`` may also be 'valid' or sepconv's 'same'.

    ``input`` is (C_in, H, W); ``weight`` is (C_out, C_in / groups, kh, kw) as in ``nn.Conv2d``.
    'same' pads TensorFlow's way (``arithmetic.same_padding``: the odd pixel at the end), as
    ``sepconv.layers`` does, for every stride and dilation.
    """
    _check_tensors(input, weight, groups, transposed=False)
    kernel = (weight.shape[-2], weight.shape[-1])
    stride_pair, dilation_pair = _pair("stride", stride), _pair("dilation", dilation)
    amounts = _padding_amounts(padding, tuple(input.shape[-2:]), kernel, stride_pair, dilation_pair)
    # The grid the kernel slides over is exactly this tensor.
    grid = F.pad(input, _pad_order(amounts))
    is_padding = F.pad(torch.zeros(input.shape[-2:], dtype=torch.bool), _pad_order(amounts), value=True)
    if amounts[0] == amounts[1] and amounts[2] == amounts[3]:
        # Symmetric padding: the operator pads for itself, so the picture's padding is checked too.
        output = F.conv2d(
            input,
            weight,
            stride=stride_pair,
            padding=(amounts[0], amounts[2]),
            dilation=dilation_pair,
            groups=groups,
        )
    else:
        output = F.conv2d(grid, weight, stride=stride_pair, dilation=dilation_pair, groups=groups)
    return _make_step(name, grid, is_padding, weight, output, stride_pair, dilation_pair, groups)


def conv_transpose_step(
    input: torch.Tensor,
    weight: torch.Tensor,
    *,
    stride: Pair = 1,
    padding: Pair = 0,
    output_padding: Pair = 0,
    dilation: Pair = 1,
    groups: int = 1,
    name: str = "transposed",
) -> ConvStep:
    """Frames of ``F.conv_transpose2d(input, weight, ...)`` drawn as its zero-insertion view.

    ``weight`` is (C_in, C_out / groups, kh, kw) as in ``nn.ConvTranspose2d``. The shown grid is the
    input with ``stride - 1`` zeros inserted between pixels, padded by ``dilation * (k - 1) - padding``
    on each side (a negative amount crops) and by ``output_padding`` more at the end; the shown kernel is
    ``weight`` flipped and with its channel axes swapped per group, applied at stride 1.
    """
    _check_tensors(input, weight, groups, transposed=True)
    kernel = (weight.shape[-2], weight.shape[-1])
    stride_pair, dilation_pair = _pair("stride", stride), _pair("dilation", dilation)
    padding_pair, extra_pair = (
        _pair("padding", padding, minimum=0),
        _pair("output_padding", output_padding, minimum=0),
    )
    for axis in range(2):
        arithmetic.conv_transpose_output_size(
            input.shape[-2 + axis],
            kernel[axis],
            stride_pair[axis],
            padding_pair[axis],
            extra_pair[axis],
            dilation_pair[axis],
        )
    output = F.conv_transpose2d(
        input,
        weight,
        stride=stride_pair,
        padding=padding_pair,
        output_padding=extra_pair,
        groups=groups,
        dilation=dilation_pair,
    )
    channels, height, width = input.shape
    inserted = input.new_zeros(channels, (height - 1) * stride_pair[0] + 1, (width - 1) * stride_pair[1] + 1)
    inserted[:, :: stride_pair[0], :: stride_pair[1]] = input
    is_pixel = torch.zeros(inserted.shape[-2:], dtype=torch.bool)
    is_pixel[:: stride_pair[0], :: stride_pair[1]] = True
    before = [dilation_pair[axis] * (kernel[axis] - 1) - padding_pair[axis] for axis in range(2)]
    amounts = (before[0], before[0] + extra_pair[0], before[1], before[1] + extra_pair[1])
    grid = F.pad(inserted, _pad_order(amounts))
    is_padding = ~F.pad(is_pixel, _pad_order(amounts), value=False)
    out_per_group = weight.shape[1]
    in_per_group = channels // groups
    flipped = weight.flip(-2, -1).reshape(groups, in_per_group, out_per_group, *kernel)
    view_kernel = flipped.transpose(1, 2).reshape(groups * out_per_group, in_per_group, *kernel)
    return _make_step(name, grid, is_padding, view_kernel, output, (1, 1), dilation_pair, groups)


def plan_animation(
    *,
    in_channels: int = 1,
    out_channels: int = 1,
    input_size: Pair = 5,
    kernel_size: Pair = 3,
    stride: Pair = 1,
    padding: PaddingArg = 0,
    dilation: Pair = 1,
    groups: int = 1,
    depthwise: bool = False,
    depth_multiplier: int = 1,
    separable: bool = False,
    transposed: bool = False,
    output_padding: Pair = 0,
    seed: int = 0,
    input: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    pointwise_weight: torch.Tensor | None = None,
) -> ConvAnimation:
    """The frames of one convolution described by its geometry, on given or seeded random tensors.

    Modes: ``groups`` (a grouped convolution), ``depthwise`` (groups = in_channels, ``depth_multiplier``
    filters per channel, so out_channels = in_channels * depth_multiplier), ``separable`` (that
    depthwise step, then a 1x1 ``pointwise_weight`` to ``out_channels``), ``transposed``. Tensors not
    given are small random integers drawn from ``seed`` (inputs 0..4, weights -2..2), so the arithmetic
    is exact and the same seed always gives the same animation. Given tensors (any numeric dtype) are
    used as float64 and set the channel counts; ``input`` is (C, H, W) or (1, C, H, W), weights have
    the shapes of ``nn.Conv2d`` / ``nn.ConvTranspose2d`` for this geometry. A grid that cannot fit
    in memory is refused before any tensor is made (:class:`~sepconv.machine.MemoryLimitError`, naming
    the parameter that sized it: ``input_size``, ``padding``, ``dilation``, ``kernel_size`` or ``stride``).

    >>> plan_animation(input=torch.arange(1, 10).reshape(1, 3, 3), weight=torch.ones(1, 1, 2, 2)).output
    tensor([[[12., 16.],
             [24., 28.]]], dtype=torch.float64)
    """
    input, weight, pointwise_weight = (_as_float64(t) for t in (input, weight, pointwise_weight))
    if input is not None:
        if input.dim() == 4 and input.shape[0] == 1:
            input = input[0]  # a batch of one, as a layer takes it
        in_channels = input.shape[0]
    # Given tensors decide the channel counts (their shapes are checked against the geometry below).
    if weight is not None and weight.dim() == 4 and not (depthwise or separable):
        out_channels = weight.shape[1] * groups if transposed else weight.shape[0]
    if pointwise_weight is not None and pointwise_weight.dim() == 4:
        out_channels = pointwise_weight.shape[0]
    for flag, value in (("in_channels", in_channels), ("out_channels", out_channels)):
        arithmetic.check_positive(flag, value)
    arithmetic.check_positive("depth_multiplier", depth_multiplier)
    modes = [
        name
        for name, on in (("groups", groups != 1), ("depthwise", depthwise), ("separable", separable))
        if on
    ]
    if len(modes) > 1:
        raise ValueError(f"choose one of groups, depthwise and separable, got {' and '.join(modes)}")
    if transposed and (depthwise or separable):
        raise ValueError("transposed=True supports groups only, not depthwise or separable")
    if depthwise or separable:
        groups = in_channels
        conv_out = in_channels * depth_multiplier
    else:
        conv_out = out_channels
    arithmetic.check_groups(in_channels, conv_out, groups)
    kernel = _pair("kernel_size", kernel_size)
    height, width = _pair("input_size", input_size)
    size = (height, width) if input is None else (int(input.shape[-2]), int(input.shape[-1]))
    sized_by = _require_plan_memory(
        in_channels, size, kernel, stride, padding, dilation, transposed, output_padding, input_size
    )
    generator = torch.Generator().manual_seed(seed)

    def small_integers(shape: Sequence[int], low: int, high: int) -> torch.Tensor:
        return torch.randint(low, high + 1, tuple(shape), generator=generator).to(torch.float64)

    if input is None:
        input = small_integers((in_channels, height, width), 0, 4)
    if weight is None:
        shape = (in_channels, conv_out // groups) if transposed else (conv_out, in_channels // groups)
        weight = small_integers((*shape, *kernel), -2, 2)
    if transposed:
        if isinstance(padding, str):
            if padding != "valid":
                raise ValueError(
                    f"padding of a transposed convolution must be an int, a pair or 'valid', got {padding!r}"
                )
            padding = 0
        step = conv_transpose_step(
            input,
            weight,
            stride=stride,
            padding=padding,
            output_padding=output_padding,
            dilation=dilation,
            groups=groups,
        )
        return ConvAnimation((step,), sized_by)
    first = conv_step(
        input,
        weight,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        name="depthwise" if (depthwise or separable) else "conv",
    )
    if not separable:
        return ConvAnimation((first,), sized_by)
    if pointwise_weight is None:
        pointwise_weight = small_integers((out_channels, conv_out, 1, 1), -2, 2)
    # The pointwise step reads the depthwise output exactly as the real SeparableConv2d does.
    second = conv_step(first.output, pointwise_weight, name="pointwise")
    return ConvAnimation((first, second), sized_by)


def write_animation(
    animation: ConvAnimation, path: PathLike, *, fps: float = 2.0, progress: Progress | None = None
) -> Path:
    """Draw every frame and write an animated GIF (or MP4, by suffix) atomically; returns ``path``.

    ``progress(done, total)`` is called after each frame is drawn. MP4 needs ``ffmpeg``: on PATH, or
    the one the ``imageio-ffmpeg`` package ships (``pip install 'sepconv[video]'``).
    Nothing is written when drawing or encoding fails. Frames that cannot fit in memory (a lower
    bound: the canvas and one RGB copy of every frame) are refused before the first is drawn, with a
    :class:`~sepconv.machine.MemoryLimitError` naming the geometry parameter that sized the grid.
    """
    target = Path(path)
    kind = target.suffix.lower().lstrip(".")
    if kind not in ANIMATION_FORMATS:
        raise ValueError(f"path must end in .gif or .mp4, got {str(path)!r}")
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a finite number > 0, got {fps!r}")
    ffmpeg = ffmpeg_executable() if kind == "mp4" else None
    if kind == "mp4" and ffmpeg is None:
        raise ValueError(
            "writing .mp4 needs ffmpeg: put it on PATH or pip install 'sepconv[video]'; or write a .gif"
        )
    _check_writable(target)
    total = len(animation.frames)
    if total > MAX_FRAMES:
        raise ValueError(
            f"the animation would have {total} frames (more than {MAX_FRAMES}); use a smaller input or fewer channels"
        )
    _require_render_memory(animation)
    images = []
    for step in animation.steps:
        renderer = _StepRenderer(step)
        for frame in step.frames:
            images.append(renderer.render(frame))
            if progress is not None:
                progress(len(images), total)
    data = _encode_gif(images, fps) if ffmpeg is None else _encode_mp4(images, fps, ffmpeg)
    return atomic_write_bytes(target, data)


def animate_conv(
    path: PathLike, *, fps: float = 2.0, progress: Progress | None = None, **geometry: Any
) -> ConvAnimation:
    """:func:`plan_animation` with ``geometry``, then :func:`write_animation` to ``path``; returns the plan."""
    animation = plan_animation(**geometry)
    write_animation(animation, path, fps=fps, progress=progress)
    return animation


def draw_frame(step: ConvStep, index: int) -> Any:
    """The matplotlib Figure of frame ``index`` of ``step`` (for a still picture, or a notebook)."""
    renderer = _StepRenderer(step)
    renderer.show(step.frames[index])
    return renderer.figure


# --- computation helpers ---------------------------------------------------------------------------


def _make_step(
    name: str,
    grid: torch.Tensor,
    is_padding: torch.Tensor,
    kernel: torch.Tensor,
    output: torch.Tensor,
    stride: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
) -> ConvStep:
    out_channels, out_height, out_width = output.shape
    if output.numel() > MAX_FRAMES:
        raise ValueError(
            f"the {name} step would have {output.numel()} frames (more than {MAX_FRAMES}); "
            "use a smaller input or fewer channels"
        )
    in_per_group = kernel.shape[1]
    out_per_group = out_channels // groups
    kernel_h, kernel_w = kernel.shape[-2:]
    frames = []
    for channel in range(out_channels):
        first_input = (channel // out_per_group) * in_per_group
        read = tuple(range(first_input, first_input + in_per_group))
        for row in range(out_height):
            for col in range(out_width):
                top, left = row * stride[0], col * stride[1]
                rows = [top + i * dilation[0] for i in range(kernel_h)]
                cols = [left + j * dilation[1] for j in range(kernel_w)]
                value = output[channel, row, col]
                # The drawn window must produce the operator's value: this catches a geometry bug
                # in the picture, never in the numbers (those come from the operator).
                products = grid[list(read)][:, rows][:, :, cols] * kernel[channel]
                # Rounding of a sum grows with the magnitude of its terms, not of its result.
                slack = 1e-4 * float(products.abs().sum()) + 1e-6
                if abs(float(products.sum()) - float(value)) > slack:
                    raise RuntimeError(
                        f"internal error: window of output ({channel}, {row}, {col}) sums to "
                        f"{float(products.sum())}, the operator gave {float(value)}"
                    )
                frames.append(
                    Frame(
                        step=name,
                        out_channel=channel,
                        out_position=(row, col),
                        window=tuple((r, c) for r in rows for c in cols),
                        in_channels=read,
                        value=float(value),
                    )
                )
    return ConvStep(name, grid, is_padding, kernel, output, stride, dilation, groups, tuple(frames))


def _shown_grid(
    size: tuple[int, int],
    kernel: tuple[int, int],
    stride: Pair,
    padding: PaddingArg,
    dilation: Pair,
    transposed: bool,
    output_padding: Pair,
) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """(grid height, width), (input-pixel extent, padding extent) of the tallest axis: arithmetic only."""
    stride_pair, dilation_pair = _pair("stride", stride), _pair("dilation", dilation)
    if transposed:
        padding_pair = (0, 0) if padding == "valid" else _pair("padding", padding, minimum=0)  # type: ignore[arg-type]
        extra = _pair("output_padding", output_padding, minimum=0)
        pixels = [(size[axis] - 1) * stride_pair[axis] + 1 for axis in range(2)]
        pads = [
            2 * (dilation_pair[axis] * (kernel[axis] - 1) - padding_pair[axis]) + extra[axis]
            for axis in range(2)
        ]
    else:
        amounts = _padding_amounts(padding, size, kernel, stride_pair, dilation_pair)
        pixels = list(size)
        pads = [amounts[0] + amounts[1], amounts[2] + amounts[3]]
    grid = (max(1, pixels[0] + pads[0]), max(1, pixels[1] + pads[1]))
    axis = 0 if grid[0] >= grid[1] else 1
    return grid, (pixels[axis], pads[axis]), (stride_pair[axis], dilation_pair[axis])


def _require_plan_memory(
    channels: int,
    size: tuple[int, int],
    kernel: tuple[int, int],
    stride: Pair,
    padding: PaddingArg,
    dilation: Pair,
    transposed: bool,
    output_padding: Pair,
    input_size: Pair,
) -> tuple[str, Any]:
    """Refuse a geometry whose drawn grid cannot fit in memory; returns the parameter that sizes it most.

    The estimate counts the float64 input and the float64 grid the kernel slides over (padded, or
    zero-inserted), both alive while the step is computed; a lower bound of what planning allocates.
    """
    from sepconv.machine import require_memory

    grid, (pixels, pads), (axis_stride, axis_dilation) = _shown_grid(
        size, kernel, stride, padding, dilation, transposed, output_padding
    )
    # What a refusal names: the padding when it outweighs the pixels ('same' padding comes from the
    # dilation, else the kernel), the stride when inserted zeros outweigh the input, else the input.
    if pads > pixels:
        if isinstance(padding, str) or transposed:
            sized_by = ("dilation", dilation) if axis_dilation > 1 else ("kernel_size", _kernel_value(kernel))
        else:
            sized_by = ("padding", padding)
    elif transposed and axis_stride > 1:
        sized_by = ("stride", stride)
    else:
        sized_by = ("input_size", input_size)
    needed = 8 * channels * (size[0] * size[1] + grid[0] * grid[1])
    require_memory(*sized_by, needed, what=f"the {grid[0]}x{grid[1]} grid the kernel slides over")
    return sized_by


def _kernel_value(kernel: tuple[int, int]) -> int | tuple[int, int]:
    return kernel[0] if kernel[0] == kernel[1] else kernel


def _canvas_size(step: ConvStep) -> tuple[int, int]:
    """(width, height) in pixels of the figure :class:`_StepRenderer` draws ``step`` on."""
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


def _require_render_memory(animation: ConvAnimation) -> None:
    """Refuse an animation whose frames cannot fit in memory, before drawing the first.

    The estimate counts the RGBA canvas of the largest step (4 bytes a pixel) and the RGB copy of
    every frame kept for encoding (3 bytes a pixel); a lower bound of what drawing allocates
    (matplotlib's own buffers and the encoder's are left out).
    """
    from sepconv.machine import require_memory

    if any(step.grid.shape[0] + 1 > MAX_DRAWN_CHANNELS for step in animation.steps):
        return  # the renderer refuses it, naming the channel count
    sizes = [_canvas_size(step) for step in animation.steps]
    pixels = [width * height for width, height in sizes]
    frames = sum(len(step.frames) * count * 3 for step, count in zip(animation.steps, pixels))
    needed = frames + 4 * max(pixels)
    parameter, value = animation.sized_by or ("animation", f"{len(animation.frames)} frames")
    width, height = max(sizes, key=lambda size: size[0] * size[1])
    require_memory(
        parameter, value, needed, what=f"{len(animation.frames)} frames of {width}x{height} pixels"
    )


def _as_float64(tensor: torch.Tensor | None) -> torch.Tensor | None:
    # Integer tensors are what one types for a lesson; F.conv2d wants floating point, and float64
    # keeps sums of small integers exact.
    return None if tensor is None else torch.as_tensor(tensor).detach().to(torch.float64)


def _check_tensors(input: torch.Tensor, weight: torch.Tensor, groups: int, *, transposed: bool) -> None:
    if input.dim() != 3:
        raise ValueError(f"input must be (channels, height, width), got shape {tuple(input.shape)}")
    if weight.dim() != 4:
        raise ValueError(f"weight must be 4-D, got shape {tuple(weight.shape)}")
    arithmetic.check_positive("groups", groups)
    channels = input.shape[0]
    if transposed:
        expected_in, out_channels = weight.shape[0], weight.shape[1] * groups
    else:
        expected_in, out_channels = weight.shape[1] * groups, weight.shape[0]
    arithmetic.check_groups(channels, out_channels, groups)
    if channels != expected_in:
        raise ValueError(
            f"weight of shape {tuple(weight.shape)} with groups={groups} expects {expected_in} input channels, "
            f"the input has {channels}"
        )


def _pair(name: str, value: Pair, *, minimum: int = 1) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    check = arithmetic.check_positive if minimum == 1 else arithmetic.check_non_negative
    return check(name, pair[0]), check(name, pair[1])


def _padding_amounts(
    padding: PaddingArg,
    size: tuple[int, int],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
) -> tuple[int, int, int, int]:
    """(top, bottom, left, right), after checking that the kernel fits the padded input."""
    if padding == "same":
        rows = arithmetic.same_padding(size[0], kernel[0], stride[0], dilation[0])
        cols = arithmetic.same_padding(size[1], kernel[1], stride[1], dilation[1])
        return (*rows, *cols)
    if isinstance(padding, str) and padding != "valid":
        raise ValueError(f"padding must be an int >= 0, a pair of them, 'valid' or 'same'; got {padding!r}")
    pair = (0, 0) if padding == "valid" else _pair("padding", padding, minimum=0)
    for axis in range(2):
        arithmetic.conv_output_size(size[axis], kernel[axis], stride[axis], pair[axis], dilation[axis])
    return pair[0], pair[0], pair[1], pair[1]


def _pad_order(amounts: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    top, bottom, left, right = amounts
    return left, right, top, bottom


def _check_writable(target: Path) -> None:
    """Refuse an unwritable destination before spending time on drawing (the write re-checks anyway)."""
    import os

    check_output_path(target, parameter="path")  # a device, FIFO or socket would be replaced
    folder = target.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent  # atomic_write_bytes creates the missing folders below this one
    if target.is_dir():
        raise IsADirectoryError(f"cannot write {str(target)!r}: it is a folder")
    if not folder.is_dir():
        raise NotADirectoryError(f"cannot write {str(target)!r}: {str(folder)!r} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write {str(target)!r}: folder {str(folder)!r} is not writable")


# --- drawing ---------------------------------------------------------------------------------------


def _format_number(value: float) -> str:
    if value == int(value):
        return str(int(value))
    return f"{value:.2g}"


class _StepRenderer:
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
        ax.hlines([r - 0.5 for r in range(height + 1)], -0.5, width - 0.5, color="#808080", linewidth=0.5)
        ax.vlines([c - 0.5 for c in range(width + 1)], -0.5, height - 0.5, color="#808080", linewidth=0.5)

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


def _encode_gif(images: Sequence[Any], fps: float) -> bytes:
    from PIL import Image

    # An adaptive palette per frame: the pictures use a handful of flat colours, so 32 keep them exact
    # and the file small.
    frames = [
        Image.fromarray(image).quantize(colors=32, method=Image.Quantize.FASTOCTREE) for image in images
    ]
    buffer = io.BytesIO()
    frames[0].save(
        buffer,
        format="GIF",
        save_all=True,
        append_images=frames[1:],
        duration=round(1000 / fps),
        loop=0,
        optimize=True,
    )
    return buffer.getvalue()


def ffmpeg_executable() -> str | None:
    """The ffmpeg to encode MP4 with: the one on PATH, else imageio-ffmpeg's bundled binary, else None."""
    found = shutil.which("ffmpeg")
    if found is not None:
        return found
    try:
        import imageio_ffmpeg
    except ImportError:
        return None
    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError:  # the package is installed without a binary for this platform
        return None


def _encode_mp4(images: Sequence[Any], fps: float, ffmpeg: str) -> bytes:
    height, width = images[0].shape[:2]
    # H.264 wants even sizes; a fragmented MP4 can be written to a pipe, so the bytes go through
    # atomic_write_bytes like every other file.
    even = [image[: height - height % 2, : width - width % 2] for image in images]
    command = [
        ffmpeg, "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
        "-s", f"{even[0].shape[1]}x{even[0].shape[0]}", "-r", f"{fps}", "-i", "pipe:0",
        "-pix_fmt", "yuv420p", "-movflags", "frag_keyframe+empty_moov", "-f", "mp4", "pipe:1",
    ]  # fmt: skip
    result = subprocess.run(
        command, input=b"".join(image.tobytes() for image in even), capture_output=True, check=False
    )
    if result.returncode != 0:
        message = result.stderr.decode(errors="replace").strip().splitlines()
        raise OSError(f"ffmpeg failed: {message[-1] if message else result.returncode}")
    return result.stdout
