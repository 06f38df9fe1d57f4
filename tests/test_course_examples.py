"""The worked examples of the course material our users learn from, with their exact figures.

Where data and weights are small integers every sum is an integer below 2^24, exact in float32, so
those values are compared with == and torch.equal, no tolerance.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sepconv import arithmetic
from sepconv.layers import DepthwiseConv2d, PointwiseConv2d, SeparableConv2d


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_3x3_conv_16_to_32_versus_separable():
    assert _count(nn.Conv2d(16, 32, 3, bias=False)) == 4608
    assert _count(SeparableConv2d(16, 32, 3, bias=False)) == 16 * 3 * 3 + 16 * 32 == 656
    assert arithmetic.separable_params(16, 32, 3, bias=False) == 656


def test_conv_3_to_4_versus_separable():
    assert _count(nn.Conv2d(3, 4, 3, bias=False)) == arithmetic.conv_params(3, 4, 3, bias=False) == 108
    assert _count(SeparableConv2d(3, 4, 3, bias=False)) == 27 + 12 == 39


def test_all_ones_standard_depthwise_and_pointwise():
    x = torch.ones(1, 3, 12, 12)
    standard = nn.Conv2d(3, 1, 5, bias=False)
    nn.init.ones_(standard.weight)
    assert torch.equal(standard(x), torch.full((1, 1, 8, 8), 75.0))

    depthwise = DepthwiseConv2d(3, 5, bias=False)
    nn.init.ones_(depthwise.weight)
    hidden = depthwise(x)
    assert torch.equal(hidden, torch.full((1, 3, 8, 8), 25.0))

    pointwise = PointwiseConv2d(3, 1, bias=False)
    nn.init.ones_(pointwise.weight)
    assert torch.equal(pointwise(hidden), torch.full((1, 1, 8, 8), 75.0))


def test_dilated_conv_on_the_5x5_example_gives_17():
    image = torch.tensor(
        [[3, 1, 1, 0, 1], [1, 2, 0, 2, 2], [2, 3, 1, 0, 1], [1, 1, 0, 0, 2], [2, 2, 3, 1, 3]],
        dtype=torch.float32,
    )
    conv = nn.Conv2d(1, 1, 3, dilation=2, bias=False)
    nn.init.ones_(conv.weight)
    out = conv(image[None, None])
    assert out.shape == (1, 1, 1, 1) and out.item() == 17
    dilated_depthwise = DepthwiseConv2d(1, 3, dilation=2, bias=False)
    nn.init.ones_(dilated_depthwise.weight)
    assert dilated_depthwise(image[None, None]).item() == 17
    assert arithmetic.conv_output_size(5, 3, dilation=2) == 1


def test_transposed_conv_all_ones():
    conv = nn.ConvTranspose2d(1, 1, 3, bias=False)
    nn.init.ones_(conv.weight)
    out = conv(torch.ones(1, 1, 2, 2))[0, 0]
    assert out.tolist() == [[1, 2, 2, 1], [2, 4, 4, 2], [2, 4, 4, 2], [1, 2, 2, 1]]
    assert arithmetic.conv_transpose_output_size(2, 3) == 4

    strided = nn.ConvTranspose2d(1, 1, 3, stride=2, bias=False)
    nn.init.ones_(strided.weight)
    out = strided(torch.ones(1, 1, 2, 2))[0, 0]
    assert out.tolist() == [
        [1, 1, 2, 1, 1],
        [1, 1, 2, 1, 1],
        [2, 2, 4, 2, 2],
        [1, 1, 2, 1, 1],
        [1, 1, 2, 1, 1],
    ]
    assert arithmetic.conv_transpose_output_size(2, 3, stride=2) == 5


def test_depthwise_then_pointwise_on_128x128():
    x = torch.rand(3, 128, 128).unsqueeze(0)  # the lesson's unsqueeze(0): add the batch dimension
    out = PointwiseConv2d(3, 10)(DepthwiseConv2d(3, 3)(x))
    assert out.shape == (1, 10, 126, 126)
    assert SeparableConv2d(3, 10, 3)(x).shape == (1, 10, 126, 126)


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_grouped_conv_parameters(groups):
    c1, c2, k = 4, 8, 3
    conv = nn.Conv2d(c1, c2, k, groups=groups, bias=False)
    assert _count(conv) == k * k * c1 * c2 // groups == arithmetic.conv_params(c1, c2, k, groups, bias=False)


def test_groups_equal_to_channels_is_depthwise():
    grouped = nn.Conv2d(4, 4, 3, groups=4, bias=False)
    depthwise = DepthwiseConv2d(4, 3, bias=False)
    depthwise.load_state_dict(grouped.state_dict())
    x = torch.randn(1, 4, 9, 9)
    # The same grouped-convolution kernel on the same weights: 9 O(1) products per output, so the
    # default float32 tolerances (rtol 1.3e-6, atol 1e-5) are ample.
    torch.testing.assert_close(depthwise(x), grouped(x))
    assert (
        arithmetic.conv_params(4, 4, 3, groups=4, bias=False)
        == arithmetic.depthwise_params(4, 3, bias=False)
        == 36
    )
