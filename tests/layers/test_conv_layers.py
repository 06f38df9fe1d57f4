"""The convolution layers' contracts in detail: whole error messages, defaults, repr, device, the
padding plans (checked against ``F.pad`` + ``F.conv2d`` written out here), and which kernel runs.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sepconv.kernels.depthwise as depthwise_kernels
from sepconv.layers import Conv2d, ConvNormAct, DepthwiseConv2d, PointwiseConv2d, SeparableConv2d
from sepconv.layers.conv import to_pair
from sepconv.layers.padding import pad_same


def _input(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


# --- whole messages --------------------------------------------------------------------------------------


def _channel_message(layer: str, channels: int, shape: tuple[int, ...], hint: str = "") -> str:
    return (
        f"layer '{layer}' expects input of shape (N, {channels}, H, W) or ({channels}, H, W): {channels} "
        f"channels, got shape {shape}" + hint
    )


@pytest.mark.parametrize(
    ("shape", "hint"),
    [
        ((2, 6, 6, 3), "; it looks channels-last (N, H, W, C): pass x.permute(0, 3, 1, 2)"),
        ((3, 2, 6, 6), "; the batch and channel dimensions look swapped: pass x.transpose(0, 1)"),
        (
            (6, 6, 3),
            "; it looks like one channels-last image (H, W, C): pass x.permute(2, 0, 1).unsqueeze(0)",
        ),
        ((5, 6, 6), "; a 3-D tensor is read as one unbatched image (C, H, W)"),
        ((6, 6), "; it looks like a single-channel image without batch: pass x[None, None]"),
        ((2, 5, 6, 6), ""),
        ((1, 2, 5, 6, 6), ""),
    ],
    ids=["NHWC", "swapped", "HWC", "3-D", "2-D", "other channel count", "5-D"],
)
def test_a_wrong_input_gets_the_whole_message_with_its_hint(shape, hint):
    layer = Conv2d(3, 4, 3)  # not inside a model: named by its class
    with pytest.raises(ValueError) as refused:
        layer(torch.zeros(shape))
    assert str(refused.value) == _channel_message("Conv2d", 3, shape, hint)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Conv2d(0, 4, 3), "in_channels must be a positive integer, got 0"),
        (lambda: Conv2d(4, 0, 3), "out_channels must be a positive integer, got 0"),
        (
            lambda: ConvNormAct(4, 8, kernel_size=(1, 2, 3)),
            "kernel_size must be a positive int or a pair of them, got (1, 2, 3)",
        ),
        (
            lambda: ConvNormAct(4, 8, dilation=(1, 2, 3)),
            "dilation must be a positive int or a pair of them, got (1, 2, 3)",
        ),
    ],
)
def test_layer_arguments_are_refused_with_the_whole_message(build, message):
    with pytest.raises(ValueError) as refused:
        build()
    assert str(refused.value) == message


@pytest.mark.parametrize("value", [(2.5, 3), ("3", 3), (True, 3), (3, 0)])
def test_to_pair_refuses_anything_but_positive_ints(value):
    with pytest.raises(ValueError) as refused:
        to_pair("kernel_size", value)
    assert str(refused.value) == f"kernel_size must be a positive int or a pair of them, got {value!r}"


# --- defaults, repr and attributes -------------------------------------------------------------------------


def test_layer_defaults():
    depthwise = DepthwiseConv2d(4, 3)
    assert (depthwise.stride, depthwise.padding, depthwise.depth_multiplier, depthwise.out_channels) == (
        (1, 1),
        (0, 0),
        1,
        4,
    )
    assert depthwise.fused is True and depthwise.bias is not None
    assert PointwiseConv2d(4, 8).bias is not None
    separable = SeparableConv2d(4, 8, 3)
    assert separable.depthwise.padding == (0, 0) and separable.depthwise.bias is None
    assert separable.pointwise.bias is not None
    block = ConvNormAct(4, 8)
    assert block[0].kernel_size == (3, 3) and block[0].padding == (1, 1)
    assert (block.in_channels, block.out_channels, block.fused) == (4, 8, True)


def test_repr_shows_the_arguments_that_differ_from_the_defaults():
    assert repr(Conv2d(3, 8, 3)) == "Conv2d(3, 8, kernel_size=(3, 3))"
    assert repr(Conv2d(3, 8, 3, stride=2, padding="same", bias=False)) == (
        "Conv2d(3, 8, kernel_size=(3, 3), stride=(2, 2), padding='same', bias=False)"
    )
    assert (
        repr(DepthwiseConv2d(4, 3, depth_multiplier=2))
        == "DepthwiseConv2d(4, kernel_size=(3, 3), depth_multiplier=2)"
    )
    assert repr(PointwiseConv2d(4, 8, groups=2)) == "PointwiseConv2d(4, 8, groups=2)"


def test_a_padding_pair_is_kept_per_axis():
    layer = Conv2d(2, 3, 3, padding=(1, 2))
    assert layer.padding == (1, 2) and layer.get_config()["padding"] == (1, 2)
    x = _input(1, 2, 5, 6)
    torch.testing.assert_close(
        layer(x), F.conv2d(x, layer.weight, layer.bias, padding=(1, 2)), rtol=0, atol=0
    )


@pytest.mark.parametrize(
    "build",
    [
        lambda **f: Conv2d(4, 8, 3, **f),
        lambda **f: DepthwiseConv2d(4, 3, **f),
        lambda **f: PointwiseConv2d(4, 8, **f),
        lambda **f: SeparableConv2d(4, 8, 3, **f),
    ],
    ids=["conv", "depthwise", "pointwise", "separable"],
)
def test_every_layer_puts_its_parameters_on_the_device_asked(build):
    layer = build(device="meta", dtype=torch.float64)
    assert {(p.device.type, p.dtype) for p in layer.parameters()} == {("meta", torch.float64)}


# --- 'same' padding plans, against F.pad + F.conv2d --------------------------------------------------------


def test_odd_same_padding_at_stride_one_is_an_ordinary_symmetric_convolution():
    layer = Conv2d(2, 2, 3, padding="same")
    assert layer.padding == (1, 1)  # nothing padded apart from the convolution's own padding
    x = _input(1, 2, 5, 6)
    torch.testing.assert_close(layer(x), F.conv2d(x, layer.weight, layer.bias, padding=1), rtol=0, atol=0)


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect"])
def test_even_same_padding_puts_the_odd_pixel_at_the_end(padding_mode):
    # a 6x8 kernel at stride 1: totals 5 (rows) and 7 (columns), split (2, 3) and (3, 4)
    layer = Conv2d(1, 1, (6, 8), padding="same", padding_mode=padding_mode)
    x = _input(1, 1, 9, 10)
    mode = "constant" if padding_mode == "zeros" else padding_mode
    expected = F.conv2d(F.pad(x, (3, 4, 2, 3), mode=mode), layer.weight, layer.bias)
    torch.testing.assert_close(layer(x), expected, rtol=0, atol=0)
    assert layer(x).shape == (1, 1, 9, 10)


def test_dynamic_same_padding_of_an_unbatched_non_square_image():
    # (C, H, W) = (1, 5, 8), kernel 3, stride 2: rows total max(3 - 1 - 4 % 2, 0) = 2 -> (1, 1);
    # columns total 3 - 1 - 7 % 2 = 1 -> (0, 1)
    x = _input(1, 5, 8)
    padded = pad_same(x, [3, 3], [2, 2], [1, 1], "zeros")
    torch.testing.assert_close(padded, F.pad(x, (0, 1, 1, 1)), rtol=0, atol=0)
    layer = Conv2d(1, 1, 3, stride=2, padding="same")
    expected = F.conv2d(F.pad(x[None], (0, 1, 1, 1)), layer.weight, layer.bias, stride=2)[0]
    torch.testing.assert_close(layer(x), expected, rtol=0, atol=0)


# --- which kernel runs ---------------------------------------------------------------------------------------


def test_a_training_depthwise_conv_runs_sepconvs_kernel_and_eval_runs_torchs(monkeypatch):
    calls = []
    original = depthwise_kernels.depthwise_conv2d

    def counting(*arguments):
        calls.append(arguments[3:])  # stride, padding, dilation
        return original(*arguments)

    monkeypatch.setattr(depthwise_kernels, "depthwise_conv2d", counting)
    layer = DepthwiseConv2d(2, 3, padding=1)
    x = _input(1, 2, 6, 6)
    layer.train()(x)
    assert calls == [((1, 1), (1, 1), (1, 1))]
    with torch.no_grad():
        layer(x)  # no gradient to compute: torch's kernel
    layer.eval()(x)
    DepthwiseConv2d(2, 3, padding=1, padding_mode="reflect").train()(x)  # the kernel pads with zeros only
    assert len(calls) == 1
    assert isinstance(layer, nn.Conv2d)
