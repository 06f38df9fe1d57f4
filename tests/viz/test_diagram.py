"""Channel diagrams: counts equal sepconv.arithmetic, the real layers and hand-worked numbers; the drawn
connectivity equals which input channels reach which output channels through the real layer."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree

import pytest
import torch
from matplotlib.patches import Rectangle
from matplotlib.text import Text
from PIL import Image
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from sepconv import arithmetic
from sepconv.layers.blocks import InvertedResidual
from sepconv.layers.depthwise import DepthwiseConv2d, PointwiseConv2d
from sepconv.layers.separable import SeparableConv2d
from sepconv.viz.diagram import DIAGRAM_KINDS, MAX_DRAWN_CHANNELS, diagram, plan_diagram
from sepconv.viz.style import save_figure

# Small sizes keep every real layer and figure fast; hidden channels of inverted-residual = 4 * 2 = 8,
# of shuffle = 4 * 1 = 4 (expand_ratio given), so groups=2 divides every column.
SIZE = 5
CASES = {
    "standard": {"in_channels": 4, "out_channels": 6},
    "grouped": {"in_channels": 4, "out_channels": 6, "groups": 2},
    "depthwise": {"in_channels": 4, "out_channels": 8},
    "pointwise": {"in_channels": 4, "out_channels": 6, "groups": 2},
    "separable": {"in_channels": 4, "out_channels": 6},
    "inverted-residual": {"in_channels": 4, "out_channels": 4, "expand_ratio": 2},
    "shuffle": {"in_channels": 4, "out_channels": 4, "groups": 2, "expand_ratio": 1},
}


def reference_layers(kind: str, in_channels: int, out_channels: int, **options) -> list[nn.Module]:
    """The real PyTorch / sepconv modules of each step, in order, built independently of the diagram."""
    groups = options.get("groups", 1)
    if kind == "standard":
        return [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)]
    if kind == "grouped":
        return [nn.Conv2d(in_channels, out_channels, 3, padding=1, groups=groups, bias=False)]
    if kind == "depthwise":
        return [
            DepthwiseConv2d(
                in_channels, 3, padding=1, depth_multiplier=out_channels // in_channels, bias=False
            )
        ]
    if kind == "pointwise":
        return [PointwiseConv2d(in_channels, out_channels, groups=groups, bias=False)]
    if kind == "separable":
        layer = SeparableConv2d(in_channels, out_channels, 3, padding=1, bias=False)
        return [layer.depthwise, layer.pointwise]
    if kind == "inverted-residual":
        block = InvertedResidual(in_channels, out_channels, 1, options["expand_ratio"])
        return [module for module in block.modules() if isinstance(module, nn.Conv2d)]
    hidden = round(in_channels * options["expand_ratio"])  # ShuffleNet's unit, written out in plain torch
    return [
        nn.Conv2d(in_channels, hidden, 1, groups=groups, bias=False),
        nn.ChannelShuffle(groups),
        nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, bias=False),
        nn.Conv2d(hidden, out_channels, 1, groups=groups, bias=False),
    ]


def measured_macs(layer: nn.Module, in_channels: int) -> int:
    """MACs torch's own flop counter finds (it counts FLOPs = 2 x MACs for a convolution)."""
    with FlopCounterMode(display=False) as counter:
        layer(torch.zeros(1, in_channels, SIZE, SIZE))
    return counter.get_total_flops() // 2


def measured_connections(layer: nn.Module, in_channels: int) -> list[tuple[int, int]]:
    """(input, output) channel pairs through which a signal passes, with every weight set to 1."""
    with torch.no_grad():
        for parameter in layer.parameters():
            parameter.fill_(1.0)
        pairs = []
        for channel in range(in_channels):
            probe = torch.zeros(1, in_channels, 3, 3)
            probe[0, channel] = 1.0
            reached = layer(probe)[0].abs().sum(dim=(1, 2))
            pairs += [(channel, int(output)) for output in torch.nonzero(reached).flatten()]
    return sorted(pairs)


def drawn_text(figure) -> str:
    return "\n".join(text.get_text() for text in figure.findobj(Text))


@pytest.mark.parametrize("kind", DIAGRAM_KINDS)
def test_counts_and_connectivity_match_the_real_layers(kind):
    options = CASES[kind]
    plan = plan_diagram(kind, input_size=SIZE, **options)
    layers = reference_layers(kind, **options)
    assert len(plan.steps) == len(layers)
    for step, layer in zip(plan.steps, layers, strict=True):
        assert step.params == sum(p.numel() for p in layer.parameters())
        assert step.macs == measured_macs(layer, step.in_channels)
        assert step.connections() == measured_connections(layer, step.in_channels)
    assert plan.standard_params == sum(
        p.numel()
        for p in nn.Conv2d(plan.in_channels, plan.out_channels, plan.kernel_size, bias=False).parameters()
    )


def test_counts_equal_the_arithmetic_formulas():
    c_in, c_out, size = 8, 16, 7
    separable = plan_diagram("separable", in_channels=c_in, out_channels=c_out, input_size=size)
    assert separable.total_params == arithmetic.separable_params(c_in, c_out, 3, bias=False)
    assert separable.total_macs == arithmetic.separable_macs(c_in, c_out, 3, size)
    assert separable.standard_params == arithmetic.conv_params(c_in, c_out, 3, bias=False)
    assert separable.standard_macs == arithmetic.conv_macs(c_in, c_out, 3, size)
    # With multiplier 1 the MAC ratio is MobileNet's 1/out + 1/k^2 (exact rationals, float rounding only).
    assert separable.macs_ratio == pytest.approx(arithmetic.separable_cost_ratio(c_out, 3), rel=1e-12)
    depthwise = plan_diagram("depthwise", in_channels=c_in, out_channels=2 * c_in, kernel_size=5)
    assert depthwise.total_params == arithmetic.depthwise_params(c_in, 5, depth_multiplier=2, bias=False)
    pointwise = plan_diagram("pointwise", in_channels=c_in, out_channels=c_out, groups=4)
    assert pointwise.total_params == arithmetic.pointwise_params(c_in, c_out, groups=4, bias=False)
    grouped = plan_diagram("grouped", in_channels=c_in, out_channels=c_out, groups=4, input_size=size)
    assert grouped.total_macs == arithmetic.conv_macs(c_in, c_out, 3, size, groups=4)


def test_hand_worked_counts():
    # Grouped 4 -> 8, groups 2, 3x3, 5x5 output: 3*3*2*8 = 144 weights, each used at 25 positions.
    grouped = plan_diagram("grouped", in_channels=4, out_channels=8, groups=2, input_size=5)
    assert (grouped.total_params, grouped.total_macs) == (144, 3600)
    # Inverted residual 4 -> 4, ratio 2 (8 hidden), 3x3, 2x2 output:
    # expand 4*8 = 32 (x4 = 128 MACs), depthwise 8*9 = 72 (288), project 8*4 = 32 (128).
    block = plan_diagram("inverted-residual", in_channels=4, out_channels=4, expand_ratio=2, input_size=2)
    assert [(s.name, s.params, s.macs) for s in block.steps] == [
        ("expand 1x1", 32, 128),
        ("depthwise 3x3", 72, 288),
        ("project 1x1", 32, 128),
    ]
    assert (block.total_params, block.total_macs, block.residual) == (136, 544, True)
    # Standard 4 -> 4 3x3 at 2x2: 144 weights, 576 MACs; the ratio is 136/144.
    assert (block.standard_params, block.standard_macs) == (144, 576)
    assert block.params_ratio == 136 / 144
    # Expansion ratio 1 has no expansion step (as MobileNetV2), and no residual when channels differ.
    plain = plan_diagram("inverted-residual", in_channels=4, out_channels=8, expand_ratio=1)
    assert [s.name for s in plain.steps] == ["depthwise 3x3", "project 1x1"] and not plain.residual


def test_residual_follows_the_real_block():
    for c_out in (4, 8):
        plan = plan_diagram("inverted-residual", in_channels=4, out_channels=c_out)
        assert plan.residual == InvertedResidual(4, c_out, 1, 6).use_res_connect


@pytest.mark.parametrize("kind", DIAGRAM_KINDS)
def test_the_figure_shows_the_counts(kind):
    figure, plan = diagram(kind, input_size=SIZE, **CASES[kind])
    text = drawn_text(figure)
    for step in plan.steps:
        assert step.name in text
        assert f"params {step.params:,}\nMACs {step.macs:,}" in text
    assert f"total params {plan.total_params:,}, MACs {plan.total_macs:,}" in text
    assert f"params {plan.standard_params:,}, MACs {plan.standard_macs:,}" in text
    assert f"ratio params {plan.params_ratio:.3f}, MACs {plan.macs_ratio:.3f}" in text
    assert ("residual" in text) == plan.residual


def test_large_columns_are_capped_but_counted():
    figure, plan = diagram("inverted-residual", in_channels=24, out_channels=24, input_size=4)
    hidden = 24 * 6
    boxes = [patch for patch in figure.axes[0].patches if isinstance(patch, Rectangle)]
    assert len(boxes) == 24 + 2 * MAX_DRAWN_CHANNELS + 24
    text = drawn_text(figure)
    assert f"{hidden} ch" in text and f"… {hidden - MAX_DRAWN_CHANNELS} more" in text
    assert plan.steps[1].params == hidden * 9  # the counts are of all 144 channels, not of the 32 drawn


def test_png_and_svg_are_written_and_decodable(tmp_path):
    figure, _ = diagram("separable", in_channels=4, out_channels=6)
    png = save_figure(figure, tmp_path / "d.png", dpi=50)
    with Image.open(png) as image:
        image.load()
        # The figure's size in inches times the dpi (matplotlib rounds to whole pixels).
        expected = (round(figure.get_figwidth() * 50), round(figure.get_figheight() * 50))
        assert image.format == "PNG" and image.size == expected
    svg = save_figure(figure, tmp_path / "d.svg")
    root = ElementTree.parse(svg).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert len(root.findall(".//{http://www.w3.org/2000/svg}path")) > 10


@pytest.mark.parametrize(
    ("kind", "options", "message"),
    [
        ("grouped", {"in_channels": 6, "out_channels": 16, "groups": 4}, "groups=4 must divide"),
        ("depthwise", {"in_channels": 4, "out_channels": 6}, "multiple of in_channels=4"),
        (
            "shuffle",
            {"in_channels": 8, "out_channels": 8, "groups": 4, "expand_ratio": 0.25},
            "hidden channels=2",
        ),
        ("standard", {"in_channels": 0}, "in_channels must be a positive integer, got 0"),
        ("standard", {"input_size": -1}, "input_size must be a positive integer, got -1"),
        ("standard", {"kernel_size": 0}, "kernel_size must be a positive integer, got 0"),
        ("standard", {"groups": 2}, "groups applies to"),
        ("pointwise", {"kernel_size": 3}, "kernel_size must be 1"),
        ("separable", {"expand_ratio": 2}, "expand_ratio applies to"),
        ("inverted-residual", {"expand_ratio": -1}, "expand_ratio must be a positive number"),
        ("dilated", {}, "kind must be one of"),
    ],
)
def test_bad_arguments_name_the_value(kind, options, message):
    with pytest.raises(ValueError, match=message):
        plan_diagram(kind, **options)
