"""The frames of an animated 2-D convolution, as data: which output cell is written, from which cells.

:func:`conv_step`, :func:`conv_transpose_step` and :func:`plan_animation` compute the frames (which
output cell is written, which input cells and channels the kernel reads, the value written); every
value is read from the output of the real PyTorch operation (``F.conv2d`` / ``F.conv_transpose2d``) on
the same tensors, and cross-checked against the sum over the drawn window, so a picture cannot
disagree with the operator. A transposed convolution is shown as its zero-insertion view: the input
with ``stride - 1`` zeros between pixels, padded by ``dilation * (kernel - 1) - padding`` (plus
``output_padding`` at the end), then a stride-1 convolution with the flipped kernel. Drawing is
:mod:`sepconv.viz.animation_render`'s, writing the file :mod:`sepconv.viz.animate`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from sepconv import arithmetic

__all__ = [
    "MAX_FRAMES",
    "ConvAnimation",
    "ConvStep",
    "Frame",
    "Pair",
    "conv_step",
    "conv_transpose_step",
    "plan_animation",
]

#: A size for both dimensions or for each.
Pair = int | tuple[int, int]
# the same as sepconv.layers.conv.PaddingArg, which is documented there
PaddingArg = int | tuple[int, int] | str

#: Beyond this many frames a GIF stops being something one watches (and takes minutes to render).
MAX_FRAMES = 600


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
        """A JSON-able dict of these fields (tuples as lists)."""
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
        """A JSON-able dict of these fields (arrays as nested lists), frames included."""
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
        """Every frame of every step, in the order they are shown."""
        return [frame for step in self.steps for frame in step.frames]

    @property
    def output(self) -> torch.Tensor:
        """The final output (C_out, H_out, W_out), that of the last step."""
        return self.steps[-1].output

    def to_dict(self) -> dict[str, Any]:
        """The steps and the output as JSON-able lists (``sepconv animate --json``)."""
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
    amounts = _padding_amounts(
        padding, (input.shape[-2], input.shape[-1]), kernel, stride_pair, dilation_pair
    )
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
    pair = (0, 0) if isinstance(padding, str) else _pair("padding", padding, minimum=0)  # str: "valid" here
    for axis in range(2):
        arithmetic.conv_output_size(size[axis], kernel[axis], stride[axis], pair[axis], dilation[axis])
    return pair[0], pair[0], pair[1], pair[1]


def _pad_order(amounts: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    top, bottom, left, right = amounts
    return left, right, top, bottom
