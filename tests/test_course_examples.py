"""The worked examples of the course material our users learn from, with their exact figures.

Where data and weights are small integers every sum is an integer below 2^24, exact in float32, so
those values are compared with == and torch.equal, no tolerance.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sepconv import arithmetic
from sepconv.analysis import summarize
from sepconv.layers import Conv2d, DepthwiseConv2d, PointwiseConv2d, SeparableConv2d


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_3x3_conv_16_to_32_versus_separable():
    # The lesson's figures: 3*3*16*32 = 4608 weights for the standard layer, 16*3*3 + 16*32 = 656 for
    # the separable one, a cost ratio of 1/32 + 1/9.
    assert _count(Conv2d(16, 32, 3, bias=False)) == arithmetic.conv_params(16, 32, 3, bias=False) == 4608
    assert _count(SeparableConv2d(16, 32, 3, bias=False)) == 16 * 3 * 3 + 16 * 32 == 656
    assert arithmetic.separable_params(16, 32, 3, bias=False) == 656
    # A float quotient of small integers: within one ulp of 656 / 4608 (rel 1e-12 is ample).
    assert arithmetic.separable_cost_ratio(32, 3) == pytest.approx(656 / 4608, rel=1e-12)


def test_conv_3_to_4_versus_separable():
    assert _count(Conv2d(3, 4, 3, bias=False)) == arithmetic.conv_params(3, 4, 3, bias=False) == 108
    assert _count(SeparableConv2d(3, 4, 3, bias=False)) == 27 + 12 == 39


def test_all_ones_standard_depthwise_and_pointwise():
    # All ones on a 12x12x3 image with 5x5 kernels: 25 per channel after the depthwise step, 75 after
    # the pointwise sum of 3 channels, as the standard 5x5x3 convolution gives; 8x8 outputs (12 - 5 + 1).
    x = torch.ones(1, 3, 12, 12)
    standard = Conv2d(3, 1, 5, bias=False)
    nn.init.ones_(standard.weight)
    assert torch.equal(standard(x), torch.full((1, 1, 8, 8), 75.0))

    depthwise = DepthwiseConv2d(3, 5, bias=False)
    nn.init.ones_(depthwise.weight)
    hidden = depthwise(x)
    assert torch.equal(hidden, torch.full((1, 3, 8, 8), 25.0))

    pointwise = PointwiseConv2d(3, 1, bias=False)
    nn.init.ones_(pointwise.weight)
    assert torch.equal(pointwise(hidden), torch.full((1, 1, 8, 8), 75.0))

    separable = SeparableConv2d(3, 1, 5, bias=False)
    for parameter in separable.parameters():
        nn.init.ones_(parameter)
    assert torch.equal(separable(x), torch.full((1, 1, 8, 8), 75.0))
    assert arithmetic.conv_output_size(12, 5) == 8


def test_dilated_conv_on_the_5x5_example_gives_17():
    image = torch.tensor(
        [[3, 1, 1, 0, 1], [1, 2, 0, 2, 2], [2, 3, 1, 0, 1], [1, 1, 0, 0, 2], [2, 2, 3, 1, 3]],
        dtype=torch.float32,
    )
    # The 3x3 kernel dilated by 2 covers the whole 5x5 image and reads its 9 even-indexed pixels:
    # 3+1+1 + 2+1+1 + 2+3+3 = 17.
    assert int(image[::2, ::2].sum()) == 17
    conv = Conv2d(1, 1, 3, dilation=2, bias=False)
    nn.init.ones_(conv.weight)
    out = conv(image[None, None])
    assert out.shape == (1, 1, 1, 1) and out.item() == 17
    dilated_depthwise = DepthwiseConv2d(1, 3, dilation=2, bias=False)
    nn.init.ones_(dilated_depthwise.weight)
    assert dilated_depthwise(image[None, None]).item() == 17
    assert arithmetic.conv_output_size(5, 3, dilation=2) == 1
    assert arithmetic.effective_kernel_size(3, dilation=2) == 5


def test_transposed_conv_all_ones():
    # The lesson's matrices: a 2x2 input of ones through an all-ones 3x3 transposed convolution. With
    # ones everywhere each multiply-add adds exactly 1 to the output, so each matrix sums to the MAC
    # count: 4 input pixels x 9 kernel taps = 36, whatever the stride.
    plain = [[1, 2, 2, 1], [2, 4, 4, 2], [2, 4, 4, 2], [1, 2, 2, 1]]
    strided = [
        [1, 1, 2, 1, 1],
        [1, 1, 2, 1, 1],
        [2, 2, 4, 2, 2],
        [1, 1, 2, 1, 1],
        [1, 1, 2, 1, 1],
    ]
    for stride, matrix in ((1, plain), (2, strided)):
        conv = nn.ConvTranspose2d(1, 1, 3, stride=stride, bias=False)
        nn.init.ones_(conv.weight)
        assert conv(torch.ones(1, 1, 2, 2))[0, 0].tolist() == matrix  # the lesson's figure, by PyTorch
        assert arithmetic.conv_transpose_output_size(2, 3, stride=stride) == len(matrix)
        assert arithmetic.conv_transpose_macs(1, 1, 3, input_size=2) == sum(map(sum, matrix)) == 36
        assert summarize(conv, (1, 1, 2, 2)).total_macs == 36


def test_depthwise_then_pointwise_on_128x128():
    x = torch.rand(3, 128, 128, generator=torch.Generator().manual_seed(0)).unsqueeze(0)  # add the batch
    layer = SeparableConv2d(3, 10, 3)
    # Written out with F.conv2d: 3 groups of one 3x3 filter, then a 1x1 mixing of the 3 channels.
    expected = F.conv2d(
        F.conv2d(x, layer.depthwise.weight, groups=3), layer.pointwise.weight, layer.pointwise.bias
    )
    out = layer(x)
    assert out.shape == (1, 10, 126, 126)
    # 9 then 3 O(1) products per output: another summation order moves it by <= 12 x 6e-8, inside the
    # default float32 tolerances (rtol 1.3e-6, atol 1e-5).
    torch.testing.assert_close(out, expected)
    # 126*126 outputs: 3 channels x 9 taps depthwise, then 10 x 3 pointwise products.
    assert arithmetic.separable_macs(3, 10, 3, output_size=126) == 126 * 126 * (3 * 9 + 10 * 3) == 904_932
    assert summarize(layer, (1, 3, 128, 128)).total_macs == 904_932


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_grouped_conv_parameters(groups):
    c1, c2, k = 4, 8, 3
    conv = Conv2d(c1, c2, k, groups=groups, bias=False)
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
