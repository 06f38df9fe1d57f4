"""SeparableConv2d against a depthwise F.conv2d followed by a 1x1 F.conv2d holding the same weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from tests.helpers.layers import Bounded, reference_conv, tf_same_pad

from sepconv.layers import DepthwiseConv2d, PointwiseConv2d, SeparableConv2d


@given(
    in_channels=st.integers(1, 5),
    out_channels=st.integers(1, 7),
    kernel_size=st.integers(1, 5),
    stride=st.integers(1, 3),
    dilation=st.integers(1, 3),
    padding=st.one_of(st.sampled_from(["same", "valid"]), st.integers(0, 2)),
    depth_multiplier=st.integers(1, 3),
    bias=st.booleans(),
    channels_last=st.booleans(),
)
def test_separable_matches_depthwise_then_pointwise(
    in_channels, out_channels, kernel_size, stride, dilation, padding, depth_multiplier, bias, channels_last
):
    layer = SeparableConv2d(
        in_channels,
        out_channels,
        kernel_size,
        stride=stride,
        padding=padding,
        dilation=dilation,
        depth_multiplier=depth_multiplier,
        bias=bias,
    )
    size = (kernel_size - 1) * dilation + 1 + 4
    x = torch.randn(2, in_channels, size, size + 1, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    dw_weight = layer.depthwise.weight.detach().clone().requires_grad_()
    pw_weight = layer.pointwise.weight.detach().clone().requires_grad_()
    pw_bias = None if layer.pointwise.bias is None else layer.pointwise.bias.detach().clone()

    if channels_last:
        layer = layer.to(memory_format=torch.channels_last)
        out = layer(x.to(memory_format=torch.channels_last))
    else:
        out = layer(x)
    hidden = reference_conv(
        x_ref, dw_weight, None, (stride, stride), padding, (dilation, dilation), in_channels
    )
    expected = F.conv2d(hidden, pw_weight, pw_bias)
    # float32: an output sums at most 5*5 depthwise then 15 pointwise products of O(1) values; another
    # summation order (channels_last, other kernels) moves it by at most 40 x 6e-8 = 2.4e-6: under 1e-5.
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)

    out.square().sum().backward()
    expected.square().sum().backward()
    # A weight's gradient sums over every output position (n up to ~400 terms): float32 error at most
    # n x 6e-8 = 2.4e-5 of the terms' size (typically sqrt(n) x 6e-8 ~ 1e-6), under 1e-4.
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(layer.depthwise.weight.grad, dw_weight.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(layer.pointwise.weight.grad, pw_weight.grad, rtol=1e-4, atol=1e-4)


def test_structure_is_depthwise_then_pointwise_with_bias_on_pointwise_only():
    layer = SeparableConv2d(16, 32, 3, depth_multiplier=2)
    children = list(layer.named_children())
    assert [name for name, _ in children] == ["depthwise", "pointwise"]
    assert isinstance(layer.depthwise, DepthwiseConv2d) and isinstance(layer.pointwise, PointwiseConv2d)
    assert layer.depthwise.bias is None and layer.pointwise.bias is not None
    assert tuple(layer.pointwise.weight.shape) == (32, 32, 1, 1)
    # 16*2 filters of 3x3, then 32 -> 32 pointwise + 32 biases.
    assert sum(p.numel() for p in layer.parameters()) == 32 * 9 + 32 * 32 + 32


def test_bfloat16_separable_stays_within_the_rounding_bound_of_a_float64_reference():
    layer = SeparableConv2d(8, 16, 3, stride=2, padding="same").to(torch.bfloat16)
    x = torch.randn(2, 8, 15, 15).to(torch.bfloat16)
    out = layer(x)
    assert out.dtype == torch.bfloat16
    # float64 on the layer's own bf16 weights and input: 9 depthwise products summed in float32 and
    # rounded into a bf16 hidden map (2^-8 of itself), then 8 pointwise products and the bias, rounded
    # again; Bounded carries the hidden map's error through |pointwise weights| (see tests/helpers/layers.py).
    top, bottom = tf_same_pad(15, 3, 2, 1)
    hidden = Bounded.exact(x).pad(top, bottom, top, bottom).conv(layer.depthwise.weight, stride=2, groups=8)
    reference = hidden.conv(layer.pointwise.weight, layer.pointwise.bias)
    reference.assert_holds(out)
    # Two roundings in series: about 1% of the outputs, far below a padding, stride or bias mistake.
    assert float(reference.error.mean()) < 0.02 * float(reference.value.abs().mean())


@pytest.mark.parametrize("device_dtype", [torch.float64])
def test_dtype_is_passed_to_every_parameter(device_dtype):
    layer = SeparableConv2d(4, 8, 3, dtype=device_dtype)
    assert {p.dtype for p in layer.parameters()} == {device_dtype}


def test_repr_and_config_read_like_the_code():
    layer = SeparableConv2d(16, 32, 3, stride=2, padding="same", depth_multiplier=2)
    assert "16, 32, kernel_size=(3, 3), stride=(2, 2), padding='same', depth_multiplier=2\n" in repr(layer)
    rebuilt = SeparableConv2d(**layer.get_config())
    assert rebuilt.get_config() == layer.get_config()
    assert (
        "DepthwiseConv2d(16, kernel_size=(3, 3), stride=(2, 2), padding='same', depth_multiplier=2, bias=False)"
        in repr(layer)
    )
    assert "PointwiseConv2d(32, 32)" in repr(layer)
