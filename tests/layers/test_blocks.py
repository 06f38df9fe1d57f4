"""ConvNormAct, DepthwiseSeparableBlock and InvertedResidual against compositions of plain torch modules."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.helpers.layers import Bounded, randomize_norms
from torch import nn
from torchvision.models.mobilenetv2 import InvertedResidual as TorchvisionInvertedResidual

from sepconv.layers import (
    ConvNormAct,
    DepthwiseConv2d,
    DepthwiseSeparableBlock,
    InvertedResidual,
    PointwiseConv2d,
)


def test_depthwise_separable_block_matches_plain_modules():
    block = DepthwiseSeparableBlock(8, 16, stride=2, depth_multiplier=2).eval()
    randomize_norms(block)
    plain = nn.Sequential(
        nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=8, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 16, 1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
    ).eval()
    plain.load_state_dict(dict(zip(plain.state_dict(), block.state_dict().values(), strict=True)))
    x = torch.randn(2, 8, 9, 9)
    # The same conv, batch-norm and ReLU kernels on the same weights: at most a reordered float32 sum of
    # 9 or 16 O(1) terms (16 x 6e-8 ~ 1e-6), so the default tolerances (rtol 1.3e-6, atol 1e-5) hold.
    torch.testing.assert_close(block(x), plain(x))
    assert isinstance(block.depthwise[0], DepthwiseConv2d) and isinstance(block.pointwise[0], PointwiseConv2d)


@pytest.mark.parametrize(
    ("in_channels", "out_channels", "stride", "expand_ratio"),
    [(16, 16, 1, 6), (16, 24, 2, 6), (32, 16, 1, 1), (24, 24, 1, 1), (24, 32, 1, 4)],
)
def test_inverted_residual_exchanges_weights_with_torchvision(
    in_channels, out_channels, stride, expand_ratio
):
    ours = InvertedResidual(in_channels, out_channels, stride, expand_ratio).eval()
    theirs = TorchvisionInvertedResidual(in_channels, out_channels, stride, expand_ratio).eval()
    randomize_norms(ours)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(2, in_channels, 10, 10)
    # Same operators, weights and order as torchvision; a reordered float32 sum over at most 144 expanded
    # channels moves an O(1) output by under 144 x 6e-8 ~ 9e-6 (typically ~1e-6): 1e-5.
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)
    assert ours.use_res_connect == (stride == 1 and in_channels == out_channels)
    has_expansion = len(ours.conv) == 4
    assert has_expansion == (expand_ratio != 1)


def test_inverted_residual_residual_is_the_input_plus_branch():
    block = InvertedResidual(8, 8, 1, 6).eval()
    x = torch.randn(1, 8, 6, 6)
    # The branch is recomputed by the same kernels: equal up to the one float32 addition, well inside
    # the default tolerances (rtol 1.3e-6, atol 1e-5).
    torch.testing.assert_close(block(x), x + block.conv(x))


def test_inverted_residual_takes_norm_and_activation_layers():
    block = InvertedResidual(8, 16, 1, 2, norm_layer="groupnorm", act_layer="hardswish")
    kinds = [type(m) for m in block.modules()]
    assert nn.GroupNorm in kinds and nn.Hardswish in kinds and nn.ReLU6 not in kinds
    assert nn.BatchNorm2d not in kinds


def test_conv_norm_act_layout_and_bias_rule():
    layer = ConvNormAct(4, 8, 3, stride=2)
    assert [type(m) for m in layer] == [type(layer[0]), nn.BatchNorm2d, nn.ReLU]
    assert layer[0].bias is None and layer[0].padding == (1, 1)
    bare = ConvNormAct(4, 8, 3, norm_layer=None, act_layer=None)
    assert len(bare) == 1 and bare[0].bias is not None
    dilated = ConvNormAct(4, 4, 3, dilation=2, groups=4)
    assert isinstance(dilated[0], DepthwiseConv2d) and dilated[0].padding == (2, 2)
    x = torch.randn(1, 4, 7, 7)
    assert dilated(x).shape == x.shape


def test_unknown_activation_names_the_choices():
    with pytest.raises(ValueError, match=r"act_layer must be one of .*relu6.*got 'relu7'"):
        ConvNormAct(4, 8, act_layer="relu7")
    with pytest.raises(ValueError, match=r"norm_layer must be one of .*got 'layernorm2d'"):
        ConvNormAct(4, 8, norm_layer="layernorm2d")


def test_channel_shuffle_after_grouped_pointwise_is_torchs():
    from sepconv.layers import ChannelShuffle

    shuffle = ChannelShuffle(2)
    x = torch.arange(6.0).reshape(1, 6, 1, 1)
    # groups=2 over 6 channels: [0 1 2 | 3 4 5] -> 0 3 1 4 2 5
    assert shuffle(x).flatten().tolist() == [0, 3, 1, 4, 2, 5]


@settings(max_examples=15)
@given(
    in_channels=st.integers(1, 12),
    out_channels=st.integers(1, 12),
    stride=st.integers(1, 2),
    expand_ratio=st.sampled_from([1, 2, 3, 6]),
    channels_last=st.booleans(),
)
def test_inverted_residual_forward_and_gradients_match_torchvision(
    in_channels, out_channels, stride, expand_ratio, channels_last
):
    # Each example seeds its own weights and input: hypothesis runs examples one after another on
    # the global generator, so without this an example's numbers depend on the ones before it and a
    # failure cannot be replayed.
    torch.manual_seed(hash((in_channels, out_channels, stride, expand_ratio, channels_last)) % 2**31)
    # Training mode: batch statistics, so the normalization takes part in the gradients too.
    ours = InvertedResidual(in_channels, out_channels, stride, expand_ratio)
    theirs = TorchvisionInvertedResidual(in_channels, out_channels, stride, expand_ratio)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    ours = ours.to(memory_format=memory_format)
    x = torch.randn(3, in_channels, 9, 9).to(memory_format=memory_format).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    out, expected = ours(x), theirs(x_ref)
    # Batch statistics over 3 x 25 to 3 x 81 values per channel, sums over up to 72 channels: a
    # reordered float32 sum (channels_last) is off by <= n x 6e-8 ~ 1.5e-5 of the terms' size, then
    # divided by a batch std that can be below 1; rtol 1e-4 (forward and gradients) leaves that margin.
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    grad = torch.randn_like(out)
    out.backward(grad)
    expected.backward(grad)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-4, atol=1e-4)
    for (name, mine), (_, reference) in zip(ours.named_parameters(), theirs.named_parameters(), strict=True):
        if in_channels == 1 and expand_ratio != 1 and name == "conv.0.0.weight":
            # With one input channel the expansion's weights only scale its output channels, which
            # the BatchNorm right after divides out: their gradient is exactly 0, and both float32
            # runs compute rounding noise amplified by 1/|w| (1.3e-4 seen, above any fixed atol).
            continue
        torch.testing.assert_close(mine.grad, reference.grad, rtol=1e-4, atol=1e-4, msg=name)


def test_blocks_in_bfloat16_stay_within_the_rounding_bound_of_a_float64_reference():
    block = DepthwiseSeparableBlock(8, 16, stride=2).eval()
    residual = InvertedResidual(8, 8, 1, 6).eval()
    randomize_norms(block)
    randomize_norms(residual)
    block, residual = block.to(torch.bfloat16), residual.to(torch.bfloat16)
    x = torch.randn(2, 8, 12, 12).to(torch.bfloat16)
    # Each block written out as its layers in float64 on its own bf16 parameters, carrying the bound of
    # the bf16 result's error step by step (reference.Bounded: each convolution and norm rounds once to
    # bf16 from float32, 2^-8 of itself; ReLU/ReLU6 do not grow an error; the residual sum rounds once).
    # Before, the test allowed rtol 5e-2 / atol 8e-2 against the float32 block on unrounded inputs.
    dw, dw_norm = block.depthwise[0], block.depthwise[1]
    pw, pw_norm = block.pointwise[0], block.pointwise[1]
    expected = (
        Bounded.exact(x)
        .pad(1, 1, 1, 1)
        .conv(dw.weight, stride=2, groups=8)
        .batch_norm(dw_norm)
        .clamp()
        .conv(pw.weight)
        .batch_norm(pw_norm)
        .clamp()
    )
    expected.assert_holds(block(x))
    expand, depthwise, project, project_norm = residual.conv
    branch = (
        Bounded.exact(x)
        .conv(expand[0].weight)
        .batch_norm(expand[1])
        .clamp(6.0)
        .pad(1, 1, 1, 1)
        .conv(depthwise[0].weight, groups=48)
        .batch_norm(depthwise[1])
        .clamp(6.0)
        .conv(project.weight)
        .batch_norm(project_norm)
    )
    expected = Bounded.exact(x).add(branch)
    expected.assert_holds(residual(x))
    # Seven roundings in series, each carried through the weights after it: a few percent of the
    # outputs' size, below what a wrong padding, stride or statistic changes.
    assert float(expected.error.mean()) < 0.05 * float(expected.value.abs().mean())


def test_depthwise_separable_block_gradients_match_plain_modules():
    block = DepthwiseSeparableBlock(6, 10, kernel_size=5, dilation=2, act_layer="relu6")
    plain = nn.Sequential(
        nn.Conv2d(6, 6, 5, padding=4, dilation=2, groups=6, bias=False),
        nn.BatchNorm2d(6),
        nn.ReLU6(),
        nn.Conv2d(6, 10, 1, bias=False),
        nn.BatchNorm2d(10),
        nn.ReLU6(),
    )
    plain.load_state_dict(dict(zip(plain.state_dict(), block.state_dict().values(), strict=True)))
    x = torch.randn(4, 6, 11, 11, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    out, expected = block(x), plain(x_ref)
    # The same nn.Conv2d, BatchNorm2d and ReLU6 kernels on the same weights and padding: bit-identical in
    # practice, so the default float32 tolerances (rtol 1.3e-6, atol 1e-5) only allow a reordered sum.
    torch.testing.assert_close(out, expected)
    out.square().mean().backward()
    expected.square().mean().backward()
    # The loss is a mean over 4,840 outputs, so input gradients are ~1e-3: the default atol 1e-5 would
    # be 1% of them; atol 1e-8 is a reordered float32 sum of ~100 such terms (100 x 6e-8 x 1e-3).
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1.3e-6, atol=1e-8)
    # Parameter gradients are 1e-2 to 1e-1: the default atol 1e-5 is 1e-4 of them or less.
    grads = [p.grad for p in block.parameters()]
    torch.testing.assert_close(grads, [p.grad for p in plain.parameters()])
