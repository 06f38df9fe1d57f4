"""Exact parameter and MAC counts of every convolution kind, against formulas worked out by hand.

Convention (stated in sepconv.analysis): one MAC is one multiply-add; a convolution costs, per output
element, k_h * k_w * (C_in / groups) MACs; bias additions are not MACs. A transposed convolution is
counted the way it runs (and the way torch.utils.flop_counter counts it): every *input* element is
multiplied by k_h * k_w * (C_out / groups) weights and scattered, cropped or not.
"""

import pytest
from tests.helpers.costs import macs_from_layer_formulas
from torch import nn

from sepconv.analysis import summarize
from sepconv.layers import DepthwiseConv2d, PointwiseConv2d, SeparableConv2d

CASES = {
    # name: (layer, input shape, output shape, params, MACs), each figure derived in the comment
    "standard": (
        lambda: nn.Conv2d(3, 8, 3, padding=1),
        (2, 3, 10, 10),
        (2, 8, 10, 10),
        8 * 3 * 3 * 3 + 8,  # 224
        2 * 8 * 10 * 10 * (3 * 3 * 3),  # 43,200
    ),
    "grouped": (
        lambda: nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=4, bias=False),
        (1, 8, 12, 12),
        (1, 16, 6, 6),
        16 * (8 // 4) * 3 * 3,  # 288
        16 * 6 * 6 * (3 * 3 * 2),  # 10,368
    ),
    "depthwise": (
        lambda: DepthwiseConv2d(8, 3, padding=1),
        (1, 8, 7, 7),
        (1, 8, 7, 7),
        8 * 1 * 3 * 3 + 8,  # 80
        8 * 7 * 7 * (3 * 3 * 1),  # 3,528
    ),
    "depthwise x2 multiplier": (
        lambda: DepthwiseConv2d(8, 5, padding=2, depth_multiplier=2, bias=False),
        (1, 8, 6, 6),
        (1, 16, 6, 6),
        16 * 1 * 5 * 5,  # 400
        16 * 6 * 6 * (5 * 5 * 1),  # 14,400
    ),
    "pointwise": (
        lambda: PointwiseConv2d(8, 24),
        (1, 8, 5, 5),
        (1, 24, 5, 5),
        24 * 8 + 24,  # 216
        24 * 5 * 5 * 8,  # 4,800
    ),
    "grouped pointwise": (
        lambda: PointwiseConv2d(8, 24, groups=4, bias=False),
        (1, 8, 5, 5),
        (1, 24, 5, 5),
        24 * 2,  # 48
        24 * 5 * 5 * 2,  # 1,200
    ),
    "separable": (
        lambda: SeparableConv2d(16, 32, 3, padding=1),
        (1, 16, 8, 8),
        (1, 32, 8, 8),
        16 * 3 * 3 + 16 * 32 + 32,  # 688: depthwise without bias, pointwise with
        16 * 8 * 8 * 9 + 32 * 8 * 8 * 16,  # 9,216 + 32,768 = 41,984
    ),
    "dilated": (
        lambda: nn.Conv2d(4, 6, 3, dilation=2),
        (1, 4, 9, 9),
        (1, 6, 5, 5),  # 9 - 2*(3-1) = 5
        6 * 4 * 9 + 6,  # 222
        6 * 5 * 5 * (3 * 3 * 4),  # 5,400: dilation changes the output size, not the cost per output
    ),
    "transposed, groups and output_padding": (
        lambda: nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2),
        (1, 4, 5, 5),
        (1, 6, 10, 10),  # (5-1)*2 - 2*1 + (3-1) + 1 + 1 = 10
        4 * (6 // 2) * 3 * 3 + 6,  # weight (C_in, C_out/groups, k, k) = 108, plus 6 biases
        4 * 5 * 5 * (3 * 3 * (6 // 2)),  # 2,700: each input element meets k*k*C_out/groups weights
    ),
    "strided transposed": (
        lambda: nn.ConvTranspose2d(3, 2, 4, stride=2, bias=False),
        (2, 3, 4, 4),
        (2, 2, 10, 10),  # (4-1)*2 + 3 + 1
        3 * 2 * 4 * 4,  # 96
        2 * 3 * 4 * 4 * (4 * 4 * 2),  # 3,072
    ),
}


@pytest.mark.parametrize("kind", list(CASES))
def test_conv_kind_counts_match_hand_derivation(kind):
    build, input_shape, output_shape, params, macs = CASES[kind]
    layer = build()
    summary = summarize(layer, input_shape)
    assert summary.output_shapes == (output_shape,)
    assert summary.total_params == params
    assert summary.total_macs == macs
    assert summary.total_flops == 2 * macs
    assert sum(row.macs for row in summary.layers) == macs
    assert sum(row.params for row in summary.layers) == params


@pytest.mark.parametrize("kind", list(CASES))
def test_conv_kind_counts_match_the_arithmetic_formulas(kind):
    # A second reference besides the hand counts: sepconv.arithmetic's formulas on the shapes each
    # convolution saw (tests/helpers/costs.py), not torch's flop_registry that summarize uses.
    build, input_shape, _, _, macs = CASES[kind]
    layer = build()
    assert macs_from_layer_formulas(layer, input_shape) == macs == summarize(layer, input_shape).total_macs


def test_separable_rows_split_depthwise_and_pointwise():
    summary = summarize(SeparableConv2d(16, 32, 3, padding=1), (1, 16, 8, 8))
    rows = {row.name: row for row in summary.layers}
    assert rows["depthwise"].macs == 16 * 8 * 8 * 9
    assert rows["pointwise"].macs == 32 * 8 * 8 * 16
    assert rows["depthwise"].params == 16 * 9
    assert rows["pointwise"].params == 16 * 32 + 32
    assert rows["depthwise"].type == "DepthwiseConv2d"


def test_same_padding_with_stride_counts_the_explicit_pad_layer():
    # sepconv's Conv2d pads with F.pad before convolving for stride-2 'same'; it is still one leaf layer.
    from sepconv.layers import Conv2d

    summary = summarize(Conv2d(3, 4, 3, stride=2, padding="same"), (1, 3, 8, 8))
    (row,) = summary.layers
    assert row.output_shape == (1, 4, 4, 4)
    assert row.macs == 4 * 4 * 4 * 27
    # TF 'same' on 8 px with stride 2 pads 0 before, 1 after: first unit's centre at input pixel 1.
    assert row.receptive_field == (3, 3) and row.start == (1, 1)


def test_trainable_and_frozen_parameters_are_told_apart():
    layer = nn.Conv2d(3, 8, 3)
    layer.bias.requires_grad_(False)
    summary = summarize(layer, (1, 3, 5, 5))
    assert (summary.trainable_params, summary.total_params) == (216, 224)
    assert summary.layers[0].trainable_params == 216
