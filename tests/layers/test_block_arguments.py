"""The blocks' and factories' contracts in detail: messages, defaults, attributes, device and dtype,
and every argument reaching the layer it configures (checked against plain ``nn.Conv2d`` compositions).
"""

from __future__ import annotations

import pytest
import torch
from tests.helpers.layers import randomize_norms
from torch import nn

import sepconv.layers.blocks as blocks_module
from sepconv.layers import (
    ConvNormAct,
    DepthwiseConv2d,
    DepthwiseSeparableBlock,
    InvertedResidual,
    PointwiseConv2d,
)
from sepconv.layers.blocks import conv_layer
from sepconv.layers.conv import Conv2d
from sepconv.layers.factory import make_act, make_norm

# --- conv_layer: the most specific class, with torch's defaults ------------------------------------


def test_conv_layer_defaults_are_torchs():
    layer = conv_layer(4, 8, 3)
    assert type(layer) is Conv2d
    assert (layer.kernel_size, layer.stride, layer.padding, layer.dilation, layer.groups) == (
        (3, 3),
        (1, 1),
        (0, 0),
        (1, 1),
        1,
    )
    assert layer.bias is not None and layer.bias.shape == (8,)


@pytest.mark.parametrize("padding", [0, (0, 0), "valid", "same"])
def test_a_one_by_one_stride_one_conv_without_padding_is_pointwise(padding):
    layer = conv_layer(4, 8, 1, padding=padding)
    assert type(layer) is PointwiseConv2d
    assert layer.weight.shape == (8, 4, 1, 1)


@pytest.mark.parametrize(
    ("kernel_size", "stride", "padding"),
    [(3, 1, 1), (3, 1, 0), (1, 2, 0), (1, 1, 1)],
    ids=["3x3", "3x3 no padding", "1x1 stride 2", "1x1 padded"],
)
def test_other_convolutions_are_not_pointwise(kernel_size, stride, padding):
    layer = conv_layer(4, 8, kernel_size, stride=stride, padding=padding)
    assert type(layer) is Conv2d
    x = torch.randn(1, 4, 6, 6, generator=torch.Generator().manual_seed(0))
    reference = nn.functional.conv2d(x, layer.weight, layer.bias, stride, padding)
    torch.testing.assert_close(layer(x), reference, rtol=0, atol=0)


@pytest.mark.parametrize(("name", "value"), [("kernel_size", (1, 2, 3)), ("stride", (1, 2, 3))])
def test_conv_layer_names_a_bad_pair(name, value):
    arguments = {"kernel_size": 1, "stride": 1} | {name: value}  # 1x1: the stride is read too
    with pytest.raises(ValueError) as refused:
        conv_layer(4, 8, arguments["kernel_size"], stride=arguments["stride"])
    assert str(refused.value) == f"{name} must be a positive int or a pair of them, got {value!r}"


# --- the factories -----------------------------------------------------------------------------------


def test_factories_refuse_what_is_neither_a_name_nor_callable():
    with pytest.raises(TypeError) as refused:
        make_act(3)
    assert str(refused.value) == "act_layer must be a name, a class or a callable, got 3"
    with pytest.raises(TypeError) as refused:
        make_norm(3, 8)
    assert str(refused.value) == "norm_layer must be a name, a class or a callable, got 3"


def test_factories_call_a_callable_with_the_channel_count():
    norm = make_norm(nn.BatchNorm2d, 8)
    assert isinstance(norm, nn.BatchNorm2d) and norm.num_features == 8
    assert isinstance(make_act(nn.Hardswish), nn.Hardswish)
    assert type(make_norm("BatchNorm", 4)) is nn.BatchNorm2d and type(make_act("ReLU6")) is nn.ReLU6


# --- messages that name the argument -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: DepthwiseSeparableBlock(0, 8), "in_channels must be a positive integer, got 0"),
        (
            lambda: DepthwiseSeparableBlock(4, 8, depth_multiplier=0),
            "depth_multiplier must be a positive integer, got 0",
        ),
        (lambda: InvertedResidual(0, 8, 1, 6), "in_channels must be a positive integer, got 0"),
        (lambda: InvertedResidual(4, 0, 1, 6), "out_channels must be a positive integer, got 0"),
        (lambda: InvertedResidual(4, 8, 1, True), "expand_ratio must be a positive finite number, got True"),
        (lambda: InvertedResidual(4, 8, 1, "6"), "expand_ratio must be a positive finite number, got '6'"),
        (lambda: InvertedResidual(4, 8, 1, 0), "expand_ratio must be a positive finite number, got 0"),
    ],
)
def test_block_arguments_are_refused_by_name(build, message):
    with pytest.raises(ValueError) as refused:
        build()
    assert str(refused.value) == message


# --- attributes, device and dtype ------------------------------------------------------------------------


def test_block_attributes_are_the_arguments():
    block = InvertedResidual(4, 8, (2, 1), 2.5)
    assert (block.in_channels, block.out_channels, block.stride, block.expand_ratio) == (4, 8, (2, 1), 2.5)
    assert block.conv[0][0].out_channels == 10  # round(4 * 2.5) hidden channels
    separable = DepthwiseSeparableBlock(4, 8)
    assert (separable.in_channels, separable.out_channels) == (4, 8)


@pytest.mark.parametrize(
    "build",
    [
        lambda **f: DepthwiseSeparableBlock(4, 8, **f),
        lambda **f: InvertedResidual(4, 8, 1, 6, **f),
        lambda **f: InvertedResidual(4, 4, 1, 1, **f),
        lambda **f: ConvNormAct(4, 8, **f),
    ],
    ids=["separable", "inverted residual", "inverted residual, no expansion", "conv-norm-act"],
)
def test_every_parameter_and_buffer_gets_the_device_and_dtype(build):
    block = build(device="meta", dtype=torch.float64)
    tensors = dict(block.named_parameters()) | {
        name: buffer for name, buffer in block.named_buffers() if buffer.is_floating_point()
    }
    assert tensors
    assert {name: (t.device.type, t.dtype) for name, t in tensors.items()} == {
        name: ("meta", torch.float64) for name in tensors
    }


# --- every argument reaches its layer: against plain compositions ------------------------------------------


def test_separable_block_passes_norm_and_activation_to_both_steps():
    block = DepthwiseSeparableBlock(4, 8, norm_layer="groupnorm", act_layer="hardswish")
    assert [type(m) for m in block.depthwise] == [DepthwiseConv2d, nn.GroupNorm, nn.Hardswish]
    assert [type(m) for m in block.pointwise] == [PointwiseConv2d, nn.GroupNorm, nn.Hardswish]


def test_inverted_residual_with_kernel_dilation_and_default_relu6_matches_plain_modules():
    torch.manual_seed(0)
    block = InvertedResidual(4, 4, 1, 2, kernel_size=5, dilation=2).eval()
    randomize_norms(block)
    expand, depthwise, project, norm = block.conv
    with torch.no_grad():
        depthwise[0].weight.mul_(10)  # so that the depthwise step, too, goes past 6
    plain = nn.Sequential(
        nn.Conv2d(4, 8, 1, bias=False),
        expand[1],
        nn.ReLU6(),
        nn.Conv2d(8, 8, 5, padding=4, dilation=2, groups=8, bias=False),
        depthwise[1],
        nn.ReLU6(),
        nn.Conv2d(8, 4, 1, bias=False),
        norm,
    ).eval()
    with torch.no_grad():
        plain[0].weight.copy_(expand[0].weight)
        plain[3].weight.copy_(depthwise[0].weight)
        plain[6].weight.copy_(project.weight)
    # inputs large enough that ReLU and ReLU6 differ on many units
    x = 20 * torch.randn(2, 4, 11, 11, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (plain[:2](x) > 6).any() and (plain[:5](x) > 6).any()
        torch.testing.assert_close(block(x), x + plain(x))


def test_inverted_residual_without_a_norm_has_no_projection_norm_to_fuse():
    block = InvertedResidual(4, 4, 1, 2, norm_layer=None)
    assert type(block.conv[-1]) is PointwiseConv2d
    assert block.norm_act_pair() is None
    with_norm = InvertedResidual(4, 4, 1, 1)
    assert len(with_norm.conv) == 3 and with_norm.norm_act_pair() == (with_norm.conv[-1], None)


def test_training_runs_the_projection_norm_through_the_fused_kernel(monkeypatch):
    calls = []
    original = blocks_module.batch_norm_act

    def counting(x, norm, act):
        calls.append((type(norm), act))
        return original(x, norm, act)

    monkeypatch.setattr(blocks_module, "batch_norm_act", counting)
    block = InvertedResidual(4, 4, 1, 2).train()
    assert block.fused is True
    block(torch.randn(2, 4, 6, 6))
    # the expansion and depthwise ConvNormActs, then the projection's BatchNorm with no activation
    # (NCHW input: the depthwise step's conv + norm + activation cannot fuse into one kernel)
    assert calls == [
        (nn.BatchNorm2d, block.conv[0][2]),
        (nn.BatchNorm2d, block.conv[1][2]),
        (nn.BatchNorm2d, None),
    ]


@pytest.mark.parametrize(
    ("arguments", "kind"),
    [((4, 8, 1), PointwiseConv2d), ((2, 4, 3), DepthwiseConv2d), ((4, 8, 3), Conv2d)],
    ids=["pointwise", "depthwise", "general"],
)
@pytest.mark.parametrize("bias", [True, False])
def test_conv_layer_passes_bias_device_and_dtype_to_each_class(arguments, kind, bias):
    groups = 2 if kind is DepthwiseConv2d else 1  # groups == in_channels == 2: depthwise, multiplier 2
    layer = conv_layer(*arguments, groups=groups, bias=bias, device="meta", dtype=torch.float64)
    assert type(layer) is kind
    assert {(p.device.type, p.dtype) for p in layer.parameters()} == {("meta", torch.float64)}
    assert (layer.bias is not None) == bias
    assert layer.weight.shape[0] == arguments[1]


def test_conv_layer_passes_groups_to_a_grouped_pointwise_conv():
    layer = conv_layer(4, 8, 1, groups=2)
    assert type(layer) is PointwiseConv2d and layer.groups == 2 and layer.weight.shape == (8, 2, 1, 1)


def test_conv_layer_passes_dilation_and_groups_to_a_general_conv():
    layer = conv_layer(4, 8, 3, dilation=2, groups=2)
    assert type(layer) is Conv2d and (layer.dilation, layer.groups) == ((2, 2), 2)
    x = torch.randn(1, 4, 9, 9, generator=torch.Generator().manual_seed(0))
    reference = nn.functional.conv2d(x, layer.weight, layer.bias, dilation=2, groups=2)
    torch.testing.assert_close(layer(x), reference, rtol=0, atol=0)


# --- each block names the argument it refuses, in checks' one wording ------------------------------


@pytest.mark.parametrize(
    ("build", "param"),
    [
        (lambda: conv_layer(0, 8, 3), "in_channels"),
        (lambda: conv_layer(4, 0, 3), "out_channels"),
        (lambda: conv_layer(4, 8, 3, groups=0), "groups"),
        (lambda: ConvNormAct(0, 8, 3), "in_channels"),
        (lambda: ConvNormAct(4, 0, 3), "out_channels"),
        (lambda: DepthwiseSeparableBlock(4, 0), "out_channels"),
    ],
)
def test_a_non_positive_count_is_refused_naming_its_argument(build, param):
    from sepconv.errors import ParameterError

    with pytest.raises(ParameterError) as caught:
        build()
    assert caught.value.param == param
    assert str(caught.value) == f"{param} must be a positive integer, got 0"


def test_conv_norm_act_pads_each_axis_by_its_own_kernel_and_dilation():
    # 'same' for stride 1, worked by hand per axis: (k - 1) // 2 * d = (3-1)//2*3 = 3 and (5-1)//2*2 = 4
    block = ConvNormAct(2, 4, (3, 5), dilation=(3, 2))
    assert block[0].padding == (3, 4)
    assert block(torch.randn(1, 2, 11, 13)).shape == (1, 4, 11, 13)
