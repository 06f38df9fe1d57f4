"""DepthwiseConv2d and PointwiseConv2d against F.conv2d with the same weights: values and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from tests.helpers.layers import Bounded, reference_conv, tf_same_pad
from torch import nn

from sepconv.layers import Conv2d, DepthwiseConv2d, PointwiseConv2d


@st.composite
def depthwise_configs(draw):
    kernel = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = draw(st.one_of(st.sampled_from(["same", "valid"]), st.integers(0, 2)))
    padding_mode = draw(st.sampled_from(["zeros", "reflect", "replicate", "circular"]))
    min_size = max((k - 1) * d + 1 for k, d in zip(kernel, dilation))
    height = draw(st.integers(min_size, min_size + 6))
    width = draw(st.integers(min_size, min_size + 6))
    if padding_mode != "zeros" and isinstance(padding, int) and padding >= min(height, width):
        padding = 0
    return {
        "in_channels": draw(st.integers(1, 6)),
        "depth_multiplier": draw(st.integers(1, 3)),
        "kernel_size": kernel,
        "stride": stride,
        "dilation": dilation,
        "padding": padding,
        "padding_mode": padding_mode,
        "bias": draw(st.booleans()),
        "batch": draw(st.integers(1, 3)),
        "size": (height, width),
    }


def _input(config, **kwargs) -> torch.Tensor:
    return torch.randn(config["batch"], config["in_channels"], *config["size"], **kwargs)


@given(depthwise_configs())
def test_depthwise_matches_grouped_conv_forward_and_backward(config):
    layer = DepthwiseConv2d(
        config["in_channels"],
        config["kernel_size"],
        stride=config["stride"],
        padding=config["padding"],
        dilation=config["dilation"],
        depth_multiplier=config["depth_multiplier"],
        bias=config["bias"],
        padding_mode=config["padding_mode"],
    )
    assert layer.groups == config["in_channels"]
    assert layer.out_channels == config["in_channels"] * config["depth_multiplier"]
    weight = layer.weight.detach().clone().requires_grad_()
    bias = None if layer.bias is None else layer.bias.detach().clone().requires_grad_()
    x = _input(config).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()

    out = layer(x)
    expected = reference_conv(
        x_ref,
        weight,
        bias,
        config["stride"],
        config["padding"],
        config["dilation"],
        config["in_channels"],
        config["padding_mode"],
    )
    # The same products summed by the same family of float32 kernels, perhaps in another order: an
    # output sums <= 5 x 5 O(1) products (<= 25 x 6e-8 = 1.5e-6 apart); a weight gradient sums ~10^3
    # products, blocked by the kernels (~sqrt(n) x 6e-8 ~ 2e-6 relative). 1e-5 covers both.
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    if config["padding"] == "same":
        expected_size = tuple(-(-s // st_) for s, st_ in zip(config["size"], config["stride"]))
        assert tuple(out.shape[-2:]) == expected_size

    grad_out = torch.randn_like(out)
    out.backward(grad_out)
    expected.backward(grad_out)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.weight.grad, weight.grad, rtol=1e-5, atol=1e-5)
    if bias is not None:
        torch.testing.assert_close(layer.bias.grad, bias.grad, rtol=1e-5, atol=1e-5)


@given(
    in_groups=st.integers(1, 4),
    out_groups=st.integers(1, 4),
    groups=st.integers(1, 3),
    bias=st.booleans(),
    size=st.integers(1, 7),
)
def test_pointwise_matches_one_by_one_conv(in_groups, out_groups, groups, bias, size):
    in_channels, out_channels = in_groups * groups, out_groups * groups
    layer = PointwiseConv2d(in_channels, out_channels, groups=groups, bias=bias)
    x = torch.randn(2, in_channels, size, size + 1, requires_grad=True)
    plain = nn.Conv2d(in_channels, out_channels, 1, groups=groups, bias=bias)
    plain.load_state_dict(layer.state_dict())
    x_ref = x.detach().clone().requires_grad_()
    # The same 1x1 convolution kernel on the same weights: bit-identical in practice (<= 4 O(1) terms per
    # output), so the default float32 tolerances (rtol 1.3e-6, atol 1e-5) only allow a reordered sum.
    torch.testing.assert_close(layer(x), plain(x_ref))
    layer(x).sum().backward()
    plain(x_ref).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad)
    torch.testing.assert_close(layer.weight.grad, plain.weight.grad)


def test_layers_are_real_conv2d_with_torch_weight_shapes():
    depthwise = DepthwiseConv2d(8, 3, depth_multiplier=2)
    pointwise = PointwiseConv2d(16, 4, groups=2)
    assert isinstance(depthwise, nn.Conv2d) and isinstance(pointwise, nn.Conv2d)
    assert tuple(depthwise.weight.shape) == (16, 1, 3, 3)
    assert tuple(pointwise.weight.shape) == (4, 8, 1, 1)
    assert sum(p.numel() for p in depthwise.parameters()) == 16 * 9 + 16


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_channels_last_gives_the_same_values(memory_format):
    layer = DepthwiseConv2d(6, 3, stride=2, padding="same", depth_multiplier=2)
    x = torch.randn(2, 6, 11, 9)
    expected = reference_conv(x, layer.weight, layer.bias, (2, 2), "same", (1, 1), 6)
    out = layer.to(memory_format=memory_format)(x.to(memory_format=memory_format))
    # 3 x 3 O(1) products per output: another summation order moves it by <= 9 x 6e-8, well under 1e-5.
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("padding", ["same", 1, "valid"])
def test_bfloat16_stays_within_the_rounding_bound_of_a_float64_reference(padding):
    layer = DepthwiseConv2d(4, 3, stride=2, padding=padding, depth_multiplier=2).to(torch.bfloat16)
    x = torch.randn(2, 4, 16, 16).to(torch.bfloat16)
    out = layer(x)
    assert out.dtype == torch.bfloat16
    if padding == "same":  # TF 'same' at stride 2 on 16 pixels: the formula in tests/helpers/layers.py
        (top, bottom), (left, right) = tf_same_pad(16, 3, 2, 1), tf_same_pad(16, 3, 2, 1)
    else:
        top = bottom = left = right = 0 if padding == "valid" else padding
    # The float64 reference on the layer's own bf16 weights and input. Each output is 9 products and the
    # bias summed in float32 and rounded once to bf16: within 2^-8 of itself, plus 10 x 2^-24 of the
    # sum of |terms| (Bounded.conv). Before, the test allowed 5e-2 against unrounded float32 inputs.
    reference = (
        Bounded.exact(x).pad(left, right, top, bottom).conv(layer.weight, layer.bias, stride=2, groups=4)
    )
    reference.assert_holds(out)
    # The bound is a fraction of a percent of the outputs: far below any padding, stride or bias mistake.
    assert float(reference.error.mean()) < 0.01 * float(reference.value.abs().mean())


def test_same_padding_stride_one_is_static_and_matches_torch_same():
    # For stride 1 PyTorch's own padding="same" is the reference, asymmetric (even kernel) case included.
    for kernel_size, dilation in [(3, 1), (4, 1), (3, 2), (2, 3), (5, 1)]:
        ours = Conv2d(3, 5, kernel_size, padding="same", dilation=dilation)
        plain = nn.Conv2d(3, 5, kernel_size, padding="same", dilation=dilation)
        plain.load_state_dict(ours.state_dict())
        x = torch.randn(1, 3, 10, 7)
        # <= 3 x 5 x 5 O(1) products per output (<= 75 x 6e-8 = 4.5e-6 for a reordered sum): inside
        # the default float32 atol 1e-5.
        torch.testing.assert_close(ours(x), plain(x))
        assert not ours._dynamic_same


def test_same_padding_matches_tensorflow_worked_example():
    # TF 'same' on 5 pixels, k=3, s=2: output 3, total padding 2 -> one before, one after.
    layer = Conv2d(1, 1, 3, stride=2, padding="same", bias=False)
    nn.init.ones_(layer.weight)
    x = torch.arange(25.0).reshape(1, 1, 5, 5)
    out = layer(x)
    expected = F.conv2d(F.pad(x, [1, 1, 1, 1]), torch.ones(1, 1, 3, 3), stride=2)
    # Sums of at most 9 integers below 36: exact in float32 (integers below 2^24), so any tolerance
    # passes only the right padding; a misplaced pad changes a sum by at least 1.
    torch.testing.assert_close(out, expected)
    # Even input: 6 pixels, k=3, s=2 -> total padding 1, all of it after (TF puts the odd pixel last).
    x6 = torch.arange(36.0).reshape(1, 1, 6, 6)
    expected6 = F.conv2d(F.pad(x6, [0, 1, 0, 1]), torch.ones(1, 1, 3, 3), stride=2)
    torch.testing.assert_close(layer(x6), expected6)
