"""Channel-connectivity diagrams: which input channels each output channel of a convolution block reads.

A block (standard, grouped, depthwise, pointwise, separable, MobileNetV2's inverted residual, ShuffleNet's
unit) is planned as a list of :class:`DiagramStep` with exact parameter and MAC counts from
:mod:`sepconv.arithmetic`; :func:`diagram` draws the plan as columns of channel boxes joined by one
coloured block per group (Okabe-Ito colour ``g`` for group ``g``), or by lines for a channel shuffle.
The plan is returned with the figure, so a test (or ``sepconv diagram --json``) checks the very numbers
that are drawn.

Counts assume no bias (every block here is followed by a normalization in the networks that use it),
stride 1 and 'same' padding, so every step's output is ``input_size`` x ``input_size``.

>>> plan = plan_diagram("separable", in_channels=4, out_channels=8, kernel_size=3, input_size=5)
>>> [(step.name, step.params, step.macs) for step in plan.steps]
[('depthwise 3x3', 36, 900), ('pointwise 1x1', 32, 800)]
>>> plan.total_params, plan.standard_params
(68, 288)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sepconv import arithmetic
from sepconv.checks import check_choice
from sepconv.formatting import format_count  # re-exported: the CLI and users took it from here

__all__ = [
    "DIAGRAM_KINDS",
    "MAX_DRAWN_CHANNELS",
    "ChannelDiagram",
    "DiagramStep",
    "diagram",
    "format_count",
    "plan_diagram",
]

#: The kinds of convolution ``sepconv diagram`` draws.
DIAGRAM_KINDS = ("standard", "grouped", "depthwise", "pointwise", "separable", "inverted-residual", "shuffle")
# Beyond 32 boxes a column's labels and lines run together at the figure's height; the counts stay exact.
#: The most channels a column draws as boxes; the counts stay exact beyond it.
MAX_DRAWN_CHANNELS = 32

_DEFAULT_KERNEL = 3
# MobileNetV2's expansion, and ShuffleNet's bottleneck (a quarter of the channels of the unit).
_DEFAULT_EXPAND = {"inverted-residual": 6.0, "shuffle": 0.25}
_DEFAULT_GROUPS = {"grouped": 2, "shuffle": 2}
_GROUPED_KINDS = ("grouped", "pointwise", "shuffle")  # the kinds where --groups is a choice


@dataclass(frozen=True)
class DiagramStep:
    """One operation of a block: a (grouped) convolution, or a channel shuffle when ``kernel_size`` is None.

    For a convolution, input channel ``i`` feeds output channel ``o`` iff both lie in the same of the
    ``groups`` equal slices of their channels; a shuffle with ``groups`` g sends input channel
    ``(o % g) * (channels / g) + o // g`` to output channel ``o`` (``nn.ChannelShuffle``).
    """

    name: str
    in_channels: int
    out_channels: int
    groups: int
    kernel_size: int | None
    params: int
    macs: int

    @property
    def is_shuffle(self) -> bool:
        """True for a channel shuffle (no kernel, no weights), False for a convolution."""
        return self.kernel_size is None

    def group_of_input(self, channel: int) -> int:
        """The group that input ``channel`` belongs to."""
        return channel // (self.in_channels // self.groups)

    def group_of_output(self, channel: int) -> int:
        """The group of output ``channel`` (for a shuffle: the group of the input it came from)."""
        if self.is_shuffle:
            return self.group_of_input(self.shuffle_source(channel))
        return channel // (self.out_channels // self.groups)

    def shuffle_source(self, output_channel: int) -> int:
        """The input channel a shuffle moves to ``output_channel``."""
        return (output_channel % self.groups) * (
            self.in_channels // self.groups
        ) + output_channel // self.groups

    def connections(self) -> list[tuple[int, int]]:
        """Every (input channel, output channel) pair where the input feeds the output, sorted."""
        if self.is_shuffle:
            return sorted((self.shuffle_source(o), o) for o in range(self.out_channels))
        return [
            (i, o)
            for i in range(self.in_channels)
            for o in range(self.out_channels)
            if self.group_of_input(i) == self.group_of_output(o)
        ]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of these fields."""
        return {
            "name": self.name,
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "groups": self.groups,
            "kernel_size": self.kernel_size,
            "params": self.params,
            "macs": self.macs,
        }


@dataclass(frozen=True)
class ChannelDiagram:
    """The plan a diagram draws: its steps, whether a residual adds the input, and the standard baseline.

    ``standard_params`` / ``standard_macs`` are those of one standard convolution with the block's
    in/out channels and kernel, the comparison the ratios make.
    """

    kind: str
    input_size: int
    kernel_size: int
    steps: tuple[DiagramStep, ...]
    residual: bool
    standard_params: int
    standard_macs: int

    @property
    def in_channels(self) -> int:
        """Channels into the first step."""
        return self.steps[0].in_channels

    @property
    def out_channels(self) -> int:
        """Channels out of the last step."""
        return self.steps[-1].out_channels

    @property
    def total_params(self) -> int:
        """Parameters of all steps together."""
        return sum(step.params for step in self.steps)

    @property
    def total_macs(self) -> int:
        """Multiply-accumulates of all steps together, at ``input_size``."""
        return sum(step.macs for step in self.steps)

    @property
    def params_ratio(self) -> float:
        """Parameters against a standard convolution of the same channels and kernel (below 1 is smaller)."""
        return self.total_params / self.standard_params

    @property
    def macs_ratio(self) -> float:
        """MACs against a standard convolution of the same channels and kernel (below 1 is cheaper)."""
        return self.total_macs / self.standard_macs

    def to_dict(self) -> dict[str, Any]:
        """The JSON document ``sepconv diagram --json`` prints: steps, totals, standard conv, ratios."""
        return {
            "kind": self.kind,
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": self.kernel_size,
            "input_size": self.input_size,
            "residual": self.residual,
            "steps": [step.to_dict() for step in self.steps],
            "total": {"params": self.total_params, "macs": self.total_macs},
            "standard": {"params": self.standard_params, "macs": self.standard_macs},
            "ratio": {"params": self.params_ratio, "macs": self.macs_ratio},
        }


def plan_diagram(
    kind: str,
    *,
    in_channels: int = 8,
    out_channels: int = 16,
    groups: int | None = None,
    kernel_size: int | None = None,
    expand_ratio: float | None = None,
    input_size: int = 56,
) -> ChannelDiagram:
    """The steps of block ``kind`` with their exact counts, validated; :func:`diagram` draws it.

    ``groups`` applies to grouped, pointwise and shuffle (default 2, 1, 2); ``kernel_size`` defaults to 3
    (pointwise is 1x1 only); ``expand_ratio`` sets the hidden channels ``round(in_channels * ratio)`` of
    inverted-residual (default 6) and shuffle (default 0.25).
    """
    check_choice("kind", kind, DIAGRAM_KINDS)
    arithmetic.check_positive("in_channels", in_channels)
    arithmetic.check_positive("out_channels", out_channels)
    arithmetic.check_positive("input_size", input_size)
    if groups is not None and kind not in _GROUPED_KINDS:
        arithmetic.check_positive("groups", groups)
        if groups != 1:
            raise ValueError(
                f"groups applies to {', '.join(_GROUPED_KINDS)} only; got groups={groups} for {kind}"
            )
    if expand_ratio is not None and kind not in _DEFAULT_EXPAND:
        raise ValueError(f"expand_ratio applies to inverted-residual and shuffle only; got it for {kind}")
    if kind == "pointwise":
        if kernel_size is not None and kernel_size != 1:
            raise ValueError(f"kernel_size must be 1 for a pointwise convolution, got {kernel_size!r}")
        kernel = 1
    else:
        kernel = (
            _DEFAULT_KERNEL if kernel_size is None else arithmetic.check_positive("kernel_size", kernel_size)
        )
    group_count = _DEFAULT_GROUPS.get(kind, 1) if groups is None else groups
    ratio = _expand_ratio(kind, expand_ratio)
    hidden = _hidden_channels(in_channels, ratio)
    size = input_size  # stride 1, 'same' padding: every step's output has the input's size

    def conv(name: str, c_in: int, c_out: int, k: int, g: int) -> DiagramStep:
        arithmetic.check_groups(c_in, c_out, g)
        params = arithmetic.conv_params(c_in, c_out, k, groups=g, bias=False)
        macs = arithmetic.conv_macs(c_in, c_out, k, size, groups=g)
        return DiagramStep(name, c_in, c_out, g, k, params, macs)

    steps: list[DiagramStep]
    if kind == "standard":
        steps = [conv(f"standard {kernel}x{kernel}", in_channels, out_channels, kernel, 1)]
    elif kind == "grouped":
        steps = [conv(f"grouped {kernel}x{kernel}", in_channels, out_channels, kernel, group_count)]
    elif kind == "depthwise":
        _check_multiplier(in_channels, out_channels)
        steps = [conv(f"depthwise {kernel}x{kernel}", in_channels, out_channels, kernel, in_channels)]
    elif kind == "pointwise":
        label = "pointwise 1x1" if group_count == 1 else "grouped pointwise 1x1"
        steps = [conv(label, in_channels, out_channels, 1, group_count)]
    elif kind == "separable":
        steps = [
            conv(f"depthwise {kernel}x{kernel}", in_channels, in_channels, kernel, in_channels),
            conv("pointwise 1x1", in_channels, out_channels, 1, 1),
        ]
    elif kind == "inverted-residual":
        # As MobileNetV2 (and sepconv's InvertedResidual): no expansion step when the ratio is 1.
        expand = [] if ratio == 1 else [conv("expand 1x1", in_channels, hidden, 1, 1)]
        steps = [
            *expand,
            conv(f"depthwise {kernel}x{kernel}", hidden, hidden, kernel, hidden),
            conv("project 1x1", hidden, out_channels, 1, 1),
        ]
    else:  # shuffle: ShuffleNet's unit, grouped 1x1 / channel shuffle / depthwise / grouped 1x1
        for name, channels in (("in_channels", in_channels), ("hidden channels", hidden)):
            if channels % group_count:
                raise ValueError(f"groups={group_count} must divide {name}={channels} for a shuffle unit")
        first = conv("grouped 1x1", in_channels, hidden, 1, group_count)
        shuffle = DiagramStep("channel shuffle", hidden, hidden, group_count, None, 0, 0)
        steps = [
            first,
            shuffle,
            conv(f"depthwise {kernel}x{kernel}", hidden, hidden, kernel, hidden),
            conv("grouped 1x1", hidden, out_channels, 1, group_count),
        ]
    residual = kind in ("inverted-residual", "shuffle") and in_channels == out_channels
    return ChannelDiagram(
        kind=kind,
        input_size=input_size,
        kernel_size=kernel,
        steps=tuple(steps),
        residual=residual,
        standard_params=arithmetic.conv_params(in_channels, out_channels, kernel, bias=False),
        standard_macs=arithmetic.conv_macs(in_channels, out_channels, kernel, size),
    )


def diagram(
    kind: str,
    *,
    in_channels: int = 8,
    out_channels: int = 16,
    groups: int | None = None,
    kernel_size: int | None = None,
    expand_ratio: float | None = None,
    input_size: int = 56,
) -> tuple[Any, ChannelDiagram]:
    """Draw block ``kind``'s channel connectivity; returns the ``matplotlib.figure.Figure`` and its plan.

    Arguments as :func:`plan_diagram`. Save the figure with :func:`sepconv.viz.style.save_figure`.
    """
    plan = plan_diagram(
        kind,
        in_channels=in_channels,
        out_channels=out_channels,
        groups=groups,
        kernel_size=kernel_size,
        expand_ratio=expand_ratio,
        input_size=input_size,
    )
    return _draw(plan), plan


def _expand_ratio(kind: str, expand_ratio: float | None) -> float:
    ratio = _DEFAULT_EXPAND.get(kind, 1.0) if expand_ratio is None else expand_ratio
    if (
        isinstance(ratio, bool)
        or not isinstance(ratio, int | float)
        or not math.isfinite(ratio)
        or ratio <= 0
    ):
        raise ValueError(f"expand_ratio must be a positive number, got {ratio!r}")
    return ratio


def _hidden_channels(in_channels: int, ratio: float) -> int:
    hidden = round(in_channels * ratio)
    if hidden < 1:
        raise ValueError(f"expand_ratio={ratio} leaves no hidden channels with in_channels={in_channels}")
    return hidden


def _check_multiplier(in_channels: int, out_channels: int) -> None:
    if out_channels % in_channels:
        raise ValueError(
            f"a depthwise convolution needs out_channels a multiple of in_channels={in_channels} "
            f"(the depth multiplier), got out_channels={out_channels}"
        )


# Layout in data coordinates: columns of channel boxes at x = 0, 1, 2, ...; channels fill y in [0, 1].
_BOX_WIDTH = 0.12
_BOX_FILL = "#F2F2F2"
_TEXT = "#000000"


def _draw(plan: ChannelDiagram) -> Any:
    from matplotlib.patches import FancyArrowPatch, Polygon, Rectangle

    from sepconv.viz.style import color, new_figure

    columns = [plan.steps[0].in_channels, *(step.out_channels for step in plan.steps)]
    figure = new_figure(max(5.5, 2.4 + 2.6 * len(plan.steps)), 6.6)
    axes = figure.add_subplot()
    axes.set_axis_off()
    axes.set_xlim(-0.45, len(plan.steps) + 0.45)
    axes.set_ylim(-0.42, 1.22)

    for column, channels in enumerate(columns):
        drawn = min(channels, MAX_DRAWN_CHANNELS)
        for channel in range(drawn):
            bottom, top = _channel_span(channel, drawn)
            axes.add_patch(
                Rectangle(
                    (column - _BOX_WIDTH / 2, bottom),
                    _BOX_WIDTH,
                    top - bottom,
                    facecolor=_BOX_FILL,
                    edgecolor=_TEXT,
                    linewidth=0.5,
                    zorder=3,
                )
            )
        label = "input" if column == 0 else "output" if column == len(columns) - 1 else "hidden"
        axes.text(column, 1.03, f"{label}\n{channels} ch", ha="center", va="bottom", fontsize=9)
        if channels > drawn:
            axes.text(column, -0.04, f"… {channels - drawn} more", ha="center", va="top", fontsize=8)

    for index, step in enumerate(plan.steps):
        left, right = index + _BOX_WIDTH / 2, index + 1 - _BOX_WIDTH / 2
        drawn_in = min(step.in_channels, MAX_DRAWN_CHANNELS)
        drawn_out = min(step.out_channels, MAX_DRAWN_CHANNELS)
        if step.is_shuffle:
            for output_channel in range(drawn_out):
                source = step.shuffle_source(output_channel)
                if source >= drawn_in:
                    continue
                y_in = sum(_channel_span(source, drawn_in)) / 2
                y_out = sum(_channel_span(output_channel, drawn_out)) / 2
                shade = color(step.group_of_input(source))
                axes.plot([left, right], [y_in, y_out], color=shade, linewidth=1.2, zorder=2)
        else:
            # One filled block per group: every input of the group feeds every output of the group.
            per_in, per_out = step.in_channels // step.groups, step.out_channels // step.groups
            for group in range(step.groups):
                first_in, first_out = group * per_in, group * per_out
                if first_in >= drawn_in or first_out >= drawn_out:
                    continue
                in_bottom = _channel_span(min(first_in + per_in, drawn_in) - 1, drawn_in)[0]
                in_top = _channel_span(first_in, drawn_in)[1]
                out_bottom = _channel_span(min(first_out + per_out, drawn_out) - 1, drawn_out)[0]
                out_top = _channel_span(first_out, drawn_out)[1]
                corners = [(left, in_top), (right, out_top), (right, out_bottom), (left, in_bottom)]
                axes.add_patch(
                    Polygon(corners, closed=True, facecolor=color(group), edgecolor=color(group), alpha=0.55)
                )
        axes.text(index + 0.5, -0.1, _step_label(step), ha="center", va="top", fontsize=8.5)

    if plan.residual:
        arrow = FancyArrowPatch(
            (0, 1.15),
            (len(plan.steps), 1.15),
            connectionstyle="arc3,rad=0",
            arrowstyle="-|>",
            mutation_scale=12,
            color=_TEXT,
            linewidth=1,
        )
        axes.add_patch(arrow)
        axes.text(
            len(plan.steps) / 2,
            1.17,
            "+ residual (identity, 0 params)",
            ha="center",
            va="bottom",
            fontsize=8.5,
        )

    axes.set_title(_summary(plan), fontsize=10, loc="left")
    return figure


def _channel_span(channel: int, drawn: int) -> tuple[float, float]:
    """(bottom, top) of channel ``channel``'s box, channel 0 at the top, a small gap between boxes."""
    pitch = 1.0 / drawn
    top = 1.0 - channel * pitch
    return top - pitch * 0.85, top


def _step_label(step: DiagramStep) -> str:
    if step.is_shuffle:
        shape = f"{step.groups} groups, permutation"
    else:
        shape = f"{step.in_channels}→{step.out_channels}, groups={step.groups}"
    return f"{step.name}\n{shape}\nparams {format_count(step.params)}\nMACs {format_count(step.macs)}"


def _summary(plan: ChannelDiagram) -> str:
    k = plan.kernel_size
    return (
        f"{plan.kind}: {plan.in_channels}→{plan.out_channels} channels, MACs at "
        f"{plan.input_size}x{plan.input_size} output, no bias\n"
        f"total params {format_count(plan.total_params)}, MACs {format_count(plan.total_macs)}\n"
        f"standard {k}x{k} conv: params {format_count(plan.standard_params)}, "
        f"MACs {format_count(plan.standard_macs)}\n"
        f"ratio params {plan.params_ratio:.3f}, MACs {plan.macs_ratio:.3f}"
    )
