"""Convolution arithmetic in plain integers: output sizes, parameter and MAC counts, receptive fields.

Nothing here imports torch, so the numbers can be worked out (and tested) by hand, and every other
module (layers, analysis, the ``sepconv calc`` command) shares one definition of each formula.

Conventions: one MAC is one multiply-add; FLOPs of a convolution are 2 x MACs. Bias additions are
not counted as MACs (the usual convention of the MobileNet papers and of ``torch.utils.flop_counter``).

>>> conv_output_size(128, kernel_size=3)
126
>>> conv_params(16, 32, 3, bias=False), separable_params(16, 32, 3, bias=False)
(4608, 656)
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

# The argument checks live in sepconv.checks (one wording for the whole package); arithmetic re-exports
# the two it has always offered, and ArgumentTypeError, so imports from here keep working.
from sepconv.checks import check_choice, check_non_negative, check_positive
from sepconv.errors import ArgumentTypeError, ParameterError

__all__ = [
    "ConvolutionCost",
    "ConvolutionCosts",
    "ReceptiveField",
    "check_groups",
    "check_non_negative",
    "check_positive",
    "conv_macs",
    "conv_output_size",
    "conv_params",
    "conv_transpose_macs",
    "conv_transpose_output_size",
    "convolution_costs",
    "depthwise_params",
    "effective_kernel_size",
    "make_divisible",
    "pointwise_params",
    "receptive_field_step",
    "same_padding",
    "separable_cost_ratio",
    "separable_macs",
    "separable_params",
    "valid_groups",
]


def valid_groups(in_channels: int, out_channels: int) -> list[int]:
    """All group counts that divide both channel counts (the values ``groups`` may take).

    >>> valid_groups(16, 32)
    [1, 2, 4, 8, 16]
    """
    in_channels = check_positive("in_channels", in_channels)
    out_channels = check_positive("out_channels", out_channels)
    common = math.gcd(in_channels, out_channels)
    return [g for g in range(1, common + 1) if common % g == 0]


def _channels_and_groups(in_channels: int, out_channels: int, groups: int) -> tuple[int, int, int]:
    groups = check_groups(in_channels, out_channels, groups)
    return int(in_channels), int(out_channels), groups


def check_groups(in_channels: int, out_channels: int, groups: int) -> int:
    """Validate ``groups`` against both channel counts, listing the valid values when it is wrong."""
    in_channels = check_positive("in_channels", in_channels)
    out_channels = check_positive("out_channels", out_channels)
    groups = check_positive("groups", groups)
    if in_channels % groups or out_channels % groups:
        raise ParameterError(
            f"groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}; "
            f"valid values: {valid_groups(in_channels, out_channels)}",
            param="groups",
        )
    return groups


def effective_kernel_size(kernel_size: int, dilation: int = 1) -> int:
    """Extent of a dilated kernel: ``dilation * (kernel_size - 1) + 1``.

    >>> effective_kernel_size(3, dilation=2)
    5
    """
    return check_positive("dilation", dilation) * (check_positive("kernel_size", kernel_size) - 1) + 1


def conv_output_size(
    input_size: int, kernel_size: int, stride: int = 1, padding: int = 0, dilation: int = 1
) -> int:
    """Output length of a convolution along one axis, as ``nn.Conv2d`` computes it.

    ``padding`` is the total added on *one* side (PyTorch's convention): floor((i + 2p - d(k-1) - 1)/s) + 1.

    >>> conv_output_size(5, kernel_size=3, dilation=2)
    1
    """
    input_size = check_positive("input_size", input_size)
    kernel_size = check_positive("kernel_size", kernel_size)
    stride = check_positive("stride", stride)
    padding = check_non_negative("padding", padding)
    dilation = check_positive("dilation", dilation)
    span = input_size + 2 * padding - effective_kernel_size(kernel_size, dilation)
    if span < 0:
        raise ParameterError(
            f"kernel_size={kernel_size} with dilation={dilation} spans "
            f"{effective_kernel_size(kernel_size, dilation)} pixels, more than the padded input "
            f"({input_size} + 2*{padding})",
            param="kernel_size",
        )
    return span // stride + 1


def conv_transpose_output_size(
    input_size: int,
    kernel_size: int,
    stride: int = 1,
    padding: int = 0,
    output_padding: int = 0,
    dilation: int = 1,
) -> int:
    """Output length of a transposed convolution, as ``nn.ConvTranspose2d`` computes it.

    (i - 1)s - 2p + d(k - 1) + output_padding + 1.

    >>> conv_transpose_output_size(2, kernel_size=3, stride=2)
    5
    """
    input_size = check_positive("input_size", input_size)
    kernel_size = check_positive("kernel_size", kernel_size)
    stride = check_positive("stride", stride)
    padding = check_non_negative("padding", padding)
    output_padding = check_non_negative("output_padding", output_padding)
    dilation = check_positive("dilation", dilation)
    if output_padding >= max(stride, dilation):
        raise ParameterError(
            f"output_padding={output_padding} must be smaller than stride={stride} or dilation={dilation}",
            param="output_padding",
        )
    size = (input_size - 1) * stride - 2 * padding + dilation * (kernel_size - 1) + output_padding + 1
    if size < 1:
        raise ParameterError(f"padding={padding} leaves no output (computed size {size})", param="padding")
    return size


def same_padding(input_size: int, kernel_size: int, stride: int = 1, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow-style 'same' padding along one axis: (before, after), the odd pixel after.

    The output has ceil(input_size / stride) elements for every stride and dilation.

    >>> same_padding(224, kernel_size=3, stride=2)
    (0, 1)
    >>> same_padding(10, kernel_size=4)
    (1, 2)
    """
    input_size = check_positive("input_size", input_size)
    kernel_size = check_positive("kernel_size", kernel_size)
    stride = check_positive("stride", stride)
    dilation = check_positive("dilation", dilation)
    output_size = -(-input_size // stride)
    total = max((output_size - 1) * stride + effective_kernel_size(kernel_size, dilation) - input_size, 0)
    return total // 2, total - total // 2


def conv_params(
    in_channels: int,
    out_channels: int,
    kernel_size: int | tuple[int, int],
    groups: int = 1,
    bias: bool = True,
) -> int:
    """Parameters of a (grouped) convolution: k_h * k_w * (in / groups) * out, plus out biases.

    >>> [conv_params(4, 8, 3, groups=g, bias=False) for g in (1, 2, 4)]
    [288, 144, 72]
    """
    kernel_h, kernel_w = _pair("kernel_size", kernel_size)
    in_channels, out_channels, groups = _channels_and_groups(in_channels, out_channels, groups)
    return kernel_h * kernel_w * (in_channels // groups) * out_channels + (out_channels if bias else 0)


def conv_macs(
    in_channels: int,
    out_channels: int,
    kernel_size: int | tuple[int, int],
    output_size: int | tuple[int, int],
    groups: int = 1,
    batch_size: int = 1,
) -> int:
    """Multiply-adds of a (grouped) convolution: every output element takes k_h * k_w * in/groups MACs.

    >>> conv_macs(3, 4, 3, output_size=126)
    1714608
    """
    kernel_h, kernel_w = _pair("kernel_size", kernel_size)
    out_h, out_w = _pair("output_size", output_size)
    in_channels, out_channels, groups = _channels_and_groups(in_channels, out_channels, groups)
    return (
        check_positive("batch_size", batch_size)
        * out_channels
        * out_h
        * out_w
        * kernel_h
        * kernel_w
        * (in_channels // groups)
    )


def conv_transpose_macs(
    in_channels: int,
    out_channels: int,
    kernel_size: int | tuple[int, int],
    input_size: int | tuple[int, int],
    groups: int = 1,
    batch_size: int = 1,
) -> int:
    """Multiply-adds of a transposed convolution: each *input* element scatters into k_h * k_w * out/groups.

    This is the count PyTorch's flop counter uses (the gradient of a convolution), so it does not depend
    on stride, padding or output_padding.
    """
    kernel_h, kernel_w = _pair("kernel_size", kernel_size)
    in_h, in_w = _pair("input_size", input_size)
    in_channels, out_channels, groups = _channels_and_groups(in_channels, out_channels, groups)
    return (
        check_positive("batch_size", batch_size)
        * in_channels
        * in_h
        * in_w
        * kernel_h
        * kernel_w
        * (out_channels // groups)
    )


def depthwise_params(
    in_channels: int, kernel_size: int | tuple[int, int], depth_multiplier: int = 1, bias: bool = True
) -> int:
    """Parameters of a depthwise convolution with ``depth_multiplier`` filters per input channel."""
    depth_multiplier = check_positive("depth_multiplier", depth_multiplier)
    in_channels = check_positive("in_channels", in_channels)
    return conv_params(
        in_channels, in_channels * depth_multiplier, kernel_size, groups=in_channels, bias=bias
    )


def pointwise_params(in_channels: int, out_channels: int, groups: int = 1, bias: bool = True) -> int:
    """Parameters of a 1x1 convolution."""
    return conv_params(in_channels, out_channels, 1, groups=groups, bias=bias)


def separable_params(
    in_channels: int,
    out_channels: int,
    kernel_size: int | tuple[int, int],
    depth_multiplier: int = 1,
    bias: bool = True,
) -> int:
    """Parameters of depthwise (no bias) then pointwise (bias if ``bias``), as ``SeparableConv2d`` builds it.

    >>> separable_params(3, 4, 3, bias=False)
    39
    """
    hidden = check_positive("in_channels", in_channels) * check_positive("depth_multiplier", depth_multiplier)
    return depthwise_params(in_channels, kernel_size, depth_multiplier, bias=False) + pointwise_params(
        hidden, out_channels, bias=bias
    )


def separable_macs(
    in_channels: int,
    out_channels: int,
    kernel_size: int | tuple[int, int],
    output_size: int | tuple[int, int],
    depth_multiplier: int = 1,
    batch_size: int = 1,
) -> int:
    """Multiply-adds of a depthwise-separable convolution at the given output size."""
    hidden = check_positive("in_channels", in_channels) * check_positive("depth_multiplier", depth_multiplier)
    depthwise = conv_macs(
        in_channels, hidden, kernel_size, output_size, groups=in_channels, batch_size=batch_size
    )
    pointwise = conv_macs(hidden, out_channels, 1, output_size, batch_size=batch_size)
    return depthwise + pointwise


def separable_cost_ratio(
    out_channels: int, kernel_size: int | tuple[int, int], depth_multiplier: int = 1
) -> float:
    """MACs of separable / standard convolution: depth_multiplier * (1/out_channels + 1/(k_h*k_w)).

    Both at the same output size: the depthwise step costs m * C_in * k_h * k_w and the pointwise step
    m * C_in * C_out MACs per output pixel, against C_in * C_out * k_h * k_w for the standard one.

    >>> round(separable_cost_ratio(32, 3), 4), round(separable_cost_ratio(32, 3, depth_multiplier=2), 4)
    (0.1424, 0.2847)
    """
    kernel_h, kernel_w = _pair("kernel_size", kernel_size)
    out_channels = check_positive("out_channels", out_channels)
    depth_multiplier = check_positive("depth_multiplier", depth_multiplier)
    return depth_multiplier * (1 / out_channels + 1 / (kernel_h * kernel_w))


@dataclass(frozen=True)
class ConvolutionCost:
    """One way to do a convolution: its parameters and MACs, and their ratios to the standard one.

    ``kind`` is "standard", "grouped", "depthwise" (``groups == in_channels == out_channels``),
    "depthwise xM" (M filters per input channel) or "separable" (depthwise then pointwise: two
    steps, so ``groups`` is None).
    """

    kind: str
    groups: int | None
    params: int
    macs: int
    params_ratio: float
    macs_ratio: float


@dataclass(frozen=True)
class ConvolutionCosts:
    """What :func:`convolution_costs` works out: the layer's geometry and one row per way to do it.

    ``rows`` starts with the standard convolution (the reference of every ratio), then every valid
    group count, and ends with the depthwise-separable form; ``separable_ratio_formula`` is the
    closed form of its MACs ratio (:func:`separable_cost_ratio`).
    """

    in_channels: int
    out_channels: int
    kernel_size: int
    stride: int
    padding: int | str
    dilation: int
    depth_multiplier: int
    input_size: tuple[int, int]
    output_size: tuple[int, int]
    rows: tuple[ConvolutionCost, ...]
    separable_ratio_formula: float

    def to_dict(self) -> dict[str, Any]:
        """The costs as plain JSON types (what ``sepconv calc --json`` prints); padding as text."""
        return {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": self.kernel_size,
            "stride": self.stride,
            "padding": str(self.padding),
            "dilation": self.dilation,
            "depth_multiplier": self.depth_multiplier,
            "input_size": list(self.input_size),
            "output_size": list(self.output_size),
            "rows": [vars(row).copy() for row in self.rows],
            "separable_ratio_formula": self.separable_ratio_formula,
        }


def convolution_costs(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    input_size: int | tuple[int, int],
    *,
    stride: int = 1,
    padding: int | str = "same",
    dilation: int = 1,
    depth_multiplier: int = 1,
    bias: bool = True,
) -> ConvolutionCosts:
    """One 2-D convolution done every way: standard, grouped (each valid group count), separable.

    Exact integers for one image of ``input_size`` (H or (H, W)), so the choice between the forms can
    be read off before any layer is built; ``sepconv calc`` prints this. ``padding`` is an integer >= 0,
    "valid" (none) or "same" (TensorFlow's: the output is ceil(size / stride), :func:`same_padding`).

    >>> costs = convolution_costs(16, 32, 3, 10, bias=False)
    >>> costs.output_size, [(row.kind, row.params) for row in costs.rows][::2]
    ((10, 10), [('standard', 4608), ('grouped', 1152), ('depthwise x2', 288)])
    >>> costs.rows[-1].kind, costs.rows[-1].macs, round(costs.rows[-1].macs_ratio, 4)
    ('separable', 65600, 0.1424)
    """
    kernel_size = check_positive("kernel_size", kernel_size)
    stride = check_positive("stride", stride)
    dilation = check_positive("dilation", dilation)
    depth_multiplier = check_positive("depth_multiplier", depth_multiplier)
    if isinstance(padding, str):
        padding = check_choice("padding", padding, ("same", "valid"))
    else:
        padding = check_non_negative("padding", padding)
    height, width = _pair("input_size", input_size)
    output_size = (
        _padded_output_size(height, kernel_size, stride, padding, dilation),
        _padded_output_size(width, kernel_size, stride, padding, dilation),
    )
    rows: list[tuple[str, int | None, int, int]] = []
    for groups in valid_groups(in_channels, out_channels):
        kind = "standard" if groups == 1 else "grouped"
        if groups == in_channels:
            kind = "depthwise" if groups == out_channels else f"depthwise x{out_channels // in_channels}"
        params = conv_params(in_channels, out_channels, kernel_size, groups, bias)
        rows.append(
            (kind, groups, params, conv_macs(in_channels, out_channels, kernel_size, output_size, groups))
        )
    params = separable_params(in_channels, out_channels, kernel_size, depth_multiplier, bias)
    macs = separable_macs(in_channels, out_channels, kernel_size, output_size, depth_multiplier)
    rows.append(("separable", None, params, macs))
    _, _, standard_params, standard_macs = rows[0]
    return ConvolutionCosts(
        in_channels=int(in_channels),
        out_channels=int(out_channels),
        kernel_size=kernel_size,
        stride=stride,
        padding=padding,
        dilation=dilation,
        depth_multiplier=depth_multiplier,
        input_size=(height, width),
        output_size=output_size,
        rows=tuple(
            ConvolutionCost(kind, groups, params, macs, params / standard_params, macs / standard_macs)
            for kind, groups, params, macs in rows
        ),
        separable_ratio_formula=separable_cost_ratio(out_channels, kernel_size, depth_multiplier),
    )


def _padded_output_size(size: int, kernel_size: int, stride: int, padding: int | str, dilation: int) -> int:
    if padding == "same":
        return -(-size // stride)
    return conv_output_size(size, kernel_size, stride, 0 if padding == "valid" else int(padding), dilation)


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor`` without going below 90% of it.

    The channel rounding rule of MobileNetV2 (and torchvision), so width multipliers give the same
    channel counts as the reference implementations.

    >>> make_divisible(32 * 0.75), make_divisible(17), make_divisible(10)
    (24, 16, 16)
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(
            f"value must be a finite number, got {type(value).__name__} {value!r}", param="value"
        )
    if not math.isfinite(value):
        raise ParameterError(f"value must be a finite number, got {value!r}", param="value")
    divisor = check_positive("divisor", divisor)
    floor = divisor if min_value is None else check_positive("min_value", min_value)
    rounded = max(floor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


@dataclass(frozen=True)
class ReceptiveField:
    """Receptive field of the units of one feature map, relative to the network input (one axis).

    size: how many input pixels one unit sees; stride: the distance in input pixels between adjacent
    units (the "jump"); start: the input coordinate of the centre of the first unit (-0.5 convention
    free: pixel i has centre i), which becomes negative when padding puts it outside the image.
    """

    size: float = 1
    stride: float = 1
    start: float = 0.0


def receptive_field_step(
    field: ReceptiveField, kernel_size: int, stride: int = 1, padding: int = 0, dilation: int = 1
) -> ReceptiveField:
    """Receptive field after one convolution or pooling layer (Araujo, Norris & Sim, Distill 2019).

    r_out = r_in + (k_eff - 1) * j_in;  j_out = j_in * s;  start_out = start_in + ((k_eff - 1)/2 - p) * j_in.

    >>> field = ReceptiveField()
    >>> for _ in range(2):
    ...     field = receptive_field_step(field, kernel_size=3)
    >>> field.size
    5
    """
    if not isinstance(field, ReceptiveField):
        raise ArgumentTypeError(
            f"field must be a ReceptiveField, got {type(field).__name__} {field!r}", param="field"
        )
    k_eff = effective_kernel_size(kernel_size, dilation)
    stride = check_positive("stride", stride)
    padding = check_non_negative("padding", padding)
    return ReceptiveField(
        size=field.size + (k_eff - 1) * field.stride,
        stride=field.stride * stride,
        start=field.start + ((k_eff - 1) / 2 - padding) * field.stride,
    )


def _pair(name: str, value: int | tuple[int, int]) -> tuple[int, int]:
    if not isinstance(value, (tuple, list)):  # an int, or anything else check_positive names and refuses
        number = check_positive(name, value)
        return number, number
    if len(value) != 2:
        raise ParameterError(
            f"{name} must be a positive integer or a pair of them, got {value!r}", param=name
        )
    first, second = value
    return check_positive(name, first), check_positive(name, second)
