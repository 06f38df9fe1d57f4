"""Argument types of the layers: numpy integers work as in ``nn.Conv2d``; wrong types are TypeErrors.

``nn.Conv2d(np.int64(3), ...)`` works, so sepconv's layers take any ``numbers.Integral`` (never a bool)
and store plain ints (their configs go to JSON). A wrong *type* (a float, a str, ``bias="yes"``) raises
a TypeError (``ArgumentTypeError``, also a ValueError for code that catches those), a wrong *value* a
plain ValueError; both name the parameter and quote the value. The channel-swap hint is only given
where a swap is plausible.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from sepconv.errors import ArgumentTypeError
from sepconv.layers import (
    Conv2d,
    ConvNormAct,
    DepthwiseConv2d,
    DepthwiseSeparableBlock,
    InvertedResidual,
    PointwiseConv2d,
    SeparableConv2d,
)


def _reference_conv(layer: nn.Conv2d) -> nn.Conv2d:
    """A plain nn.Conv2d with the layer's geometry and weights (the independent reference)."""
    reference = nn.Conv2d(
        layer.in_channels,
        layer.out_channels,
        layer.kernel_size,
        stride=layer.stride,
        padding=layer.padding,
        dilation=layer.dilation,
        groups=layer.groups,
        bias=layer.bias is not None,
    )
    reference.load_state_dict(layer.state_dict())
    return reference


def test_numpy_integers_build_the_same_layers_with_plain_int_attributes():
    i = np.int64
    torch.manual_seed(0)
    depthwise = DepthwiseConv2d(i(4), i(3), stride=i(2), padding=(i(1), i(1)), depth_multiplier=np.int32(2))
    torch.manual_seed(0)
    expected = DepthwiseConv2d(4, 3, stride=2, padding=1, depth_multiplier=2)
    assert depthwise.get_config() == expected.get_config()
    config = depthwise.get_config()
    # Every number stored is a Python int, so the config survives json.dumps.
    assert {type(v) for key, v in config.items() if key in ("in_channels", "depth_multiplier")} == {int}
    assert all(
        type(item) is int for key in ("kernel_size", "stride", "padding", "dilation") for item in config[key]
    )
    assert torch.equal(depthwise.weight, expected.weight)
    x = torch.randn(2, 4, 9, 9, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(depthwise.eval()(x), _reference_conv(depthwise)(x), rtol=1e-5, atol=1e-6)
    assert depthwise(x).shape == (2, 8, 5, 5)  # (9 + 2 - 3) // 2 + 1 = 5; 4 channels x 2


@pytest.mark.parametrize(
    "build",
    [
        lambda i: Conv2d(i(3), i(6), i(3), groups=i(3)),
        lambda i: PointwiseConv2d(i(3), i(6), groups=i(3)),
        lambda i: SeparableConv2d(i(3), i(5), (i(3), i(1)), dilation=i(2), padding="same"),
        lambda i: ConvNormAct(i(3), i(6), i(3), stride=i(2), groups=i(3)),
        lambda i: DepthwiseSeparableBlock(i(3), i(6), depth_multiplier=i(2)),
        lambda i: InvertedResidual(i(3), i(3), i(1), i(2)),
    ],
    ids=["conv", "pointwise", "separable", "conv_norm_act", "separable_block", "inverted_residual"],
)
def test_every_layer_takes_numpy_integers_and_computes_what_ints_give(build):
    torch.manual_seed(0)
    with_numpy = build(np.int64).eval()
    torch.manual_seed(0)
    with_ints = build(int).eval()
    assert repr(with_numpy) == repr(with_ints)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    assert torch.equal(with_numpy(x), with_ints(x))
    for module in with_numpy.modules():
        if isinstance(module, nn.Conv2d):
            assert type(module.in_channels) is int and type(module.out_channels) is int
            assert type(module.groups) is int


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Conv2d(3, 8, 3.0), "kernel_size must be a positive int or a pair of them, got 3.0"),
        (lambda: Conv2d(3, 8, "3"), "kernel_size must be a positive int or a pair of them, got '3'"),
        (
            lambda: Conv2d(3, 8, (3, None)),
            "kernel_size must be a positive int or a pair of them, got (3, None)",
        ),
        (lambda: Conv2d(3.0, 8, 3), "in_channels must be a positive integer, got 3.0"),
        (lambda: Conv2d(3, 8, 3, groups=True), "groups must be a positive integer, got True"),
        (lambda: Conv2d(3, 8, 3, stride=1.5), "stride must be a positive int or a pair of them, got 1.5"),
        (
            lambda: Conv2d(3, 8, 3, padding=1.0),
            "padding must be an int >= 0, a pair of them, 'valid' or 'same'; got 1.0",
        ),
        (lambda: Conv2d(3, 8, 3, bias="yes"), "bias must be True or False, got 'yes'"),
        (lambda: Conv2d(3, 8, 3, bias=None), "bias must be True or False, got None"),
        (
            lambda: Conv2d(3, 8, 3, padding_mode=0),
            "padding_mode must be one of zeros, reflect, replicate, circular; got 0",
        ),
        (
            lambda: DepthwiseConv2d(4, 3, depth_multiplier=2.0),
            "depth_multiplier must be a positive integer, got 2.0",
        ),
        (lambda: SeparableConv2d(4, "8", 3), "out_channels must be a positive integer, got '8'"),
        (lambda: InvertedResidual(4, 4, 1, "6"), "expand_ratio must be a positive finite number, got '6'"),
    ],
)
def test_wrong_types_are_type_errors_naming_the_parameter_and_value(build, message):
    with pytest.raises(TypeError) as refused:
        build()
    assert str(refused.value) == message
    # Also a ValueError, so `except ValueError` (the sepconv command among them) still catches it.
    assert isinstance(refused.value, ValueError) and isinstance(refused.value, ArgumentTypeError)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Conv2d(3, 8, 0), "kernel_size must be a positive int or a pair of them, got 0"),
        (
            lambda: Conv2d(3, 8, (3, 3, 3)),
            "kernel_size must be a positive int or a pair of them, got (3, 3, 3)",
        ),
        (
            lambda: Conv2d(3, 8, 3, padding=np.int64(-1)),
            "padding must be an int >= 0, a pair of them, 'valid' or 'same'; got np.int64(-1)",
        ),
        (
            lambda: InvertedResidual(4, 4, 1, float("inf")),
            "expand_ratio must be a positive finite number, got inf",
        ),
        (
            lambda: InvertedResidual(4, 4, 1, 0.1),
            "expand_ratio=0.1 leaves no hidden channel at in_channels=4 (round(4 * 0.1) = 0); it must be at least 0.125",
        ),
    ],
)
def test_wrong_values_are_value_errors_not_type_errors(build, message):
    with pytest.raises(ValueError) as refused:
        build()
    assert not isinstance(refused.value, TypeError)
    assert str(refused.value) == message


def test_the_swap_hint_needs_more_than_one_channel():
    # A one-channel layer and a batch of one RGB image: batch (1) equals in_channels by coincidence;
    # the fix is a grayscale image, and "swapped ... transpose" would be wrong advice.
    grayscale = Conv2d(1, 4, 3)
    with pytest.raises(ValueError) as refused:
        grayscale(torch.zeros(1, 3, 8, 8))
    assert str(refused.value) == (
        "layer 'Conv2d' expects input of shape (N, 1, H, W) or (1, H, W): 1 channels, got shape (1, 3, 8, 8)"
    )
    # Three channels in the batch position and a batch of five in the channel one: a swap, said so.
    rgb = Conv2d(3, 4, 3)
    with pytest.raises(ValueError, match=r"look swapped: pass x\.transpose\(0, 1\)$"):
        rgb(torch.zeros(3, 5, 8, 8))


def test_factories_and_fold_refuse_wrong_types_as_type_errors_the_command_reports():
    from sepconv.convert import fold_batchnorm
    from sepconv.layers import make_act, make_norm

    for call, message in (
        (lambda: make_act(5), "act_layer must be a name, a class or a callable, got 5"),
        (lambda: make_norm(5, 8), "norm_layer must be a name, a class or a callable, got 5"),
        (lambda: fold_batchnorm("model"), "fold_batchnorm expects an nn.Module for model, got str"),
    ):
        with pytest.raises(TypeError) as refused:
            call()
        assert str(refused.value) == message
        # A ValueError too: `sepconv train --model-arg act_layer=5` prints it as one line, exit 2.
        assert isinstance(refused.value, ValueError)
