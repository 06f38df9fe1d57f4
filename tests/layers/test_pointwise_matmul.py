"""PointwiseConv2d in training on small channels_last maps: one matrix product, against ``F.conv2d``."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from sepconv.kernels import set_fused
from sepconv.layers import PointwiseConv2d

# float32 sums of at most 40 products (input channels) per output and of at most 3 * 8 * 8 = 192 per
# weight gradient, in another order than oneDNN's: rounding grows like sqrt(terms) * 2**-24 of the sum
# of |products|, a few 1e-7 of max|reference| for standard-normal data; 1e-5 keeps a wide margin, and
# a wrong layout (mixing pixels or channels) gives O(1).
RELATIVE = 1e-5


def _relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    return float((value.detach() - reference.detach()).abs().max() / reference.detach().abs().max())


def _uses_the_matmul(layer: PointwiseConv2d, x: torch.Tensor) -> bool:
    return "Convolution" not in layer(x).grad_fn.name()


@pytest.mark.parametrize("size", [1, 2, 8])
@pytest.mark.parametrize("bias", [True, False])
def test_matches_conv2d_values_and_gradients(size, bias):
    torch.manual_seed(size)
    layer = PointwiseConv2d(40, 24, bias=bias).train()
    x = torch.randn(3, 40, size, size).contiguous(memory_format=torch.channels_last).requires_grad_()
    assert _uses_the_matmul(layer, x)
    out = layer(x)
    reference = F.conv2d(x, layer.weight, layer.bias)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert _relative_error(out, reference) <= RELATIVE
    grad_output = torch.randn_like(reference)
    leaves = [x, *layer.parameters()]
    for grad, ref_grad in zip(
        torch.autograd.grad(out, leaves, grad_output), torch.autograd.grad(reference, leaves, grad_output)
    ):
        assert _relative_error(grad, ref_grad) <= RELATIVE


def test_the_rule_keeps_the_convolution_elsewhere():
    layer = PointwiseConv2d(16, 16).train()
    small = torch.randn(2, 16, 8, 8).contiguous(memory_format=torch.channels_last).requires_grad_()
    assert _uses_the_matmul(layer, small)
    # More than 64 pixels, an NCHW input, eval mode, grouped, switched off: nn.Conv2d's own.
    large = torch.randn(2, 16, 9, 9).contiguous(memory_format=torch.channels_last).requires_grad_()
    assert not _uses_the_matmul(layer, large)
    assert not _uses_the_matmul(layer, torch.randn(2, 16, 4, 4, requires_grad=True))
    grouped = PointwiseConv2d(16, 16, groups=2).train()
    assert not _uses_the_matmul(grouped, small)
    assert set_fused(layer, False) == 1
    assert not _uses_the_matmul(layer, small)
    set_fused(layer, True)
    with torch.no_grad():
        eval_out = layer.eval()(small)
    torch.testing.assert_close(eval_out, F.conv2d(small, layer.weight, layer.bias), rtol=0, atol=0)


def _graph_names(output: torch.Tensor) -> list[str]:
    names, stack = [], [output.grad_fn]
    while stack:
        node = stack.pop()
        if node is not None:
            names.append(node.name())
            stack.extend(next_node for next_node, _ in node.next_functions)
    return names


@pytest.mark.parametrize("expand_ratio", [1, 6])
@pytest.mark.parametrize("size", [8, 16])
def test_blocks_under_bf16_autocast_are_as_close_to_float32_as_the_plain_modules(size, expand_ratio):
    # What a native-bf16 CPU runs by default: bf16 autocast, channels_last, the fast paths on. After an
    # expansion the depthwise step gets bf16 activations, without one (expand_ratio 1) the float32
    # input; either way it runs the fused depthwise operator where that pays (16x16, not 8x8).
    from sepconv.layers import InvertedResidual

    torch.manual_seed(size)
    fast = InvertedResidual(16, 16, stride=1, expand_ratio=expand_ratio)
    fast = fast.train().to(memory_format=torch.channels_last)
    plain = copy.deepcopy(fast)
    reference = copy.deepcopy(fast)
    set_fused(plain, False)
    x = torch.randn(4, 16, size, size).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast_out, plain_out = fast(x).float(), plain(x).float()
        fused_depthwise = any("DwBnAct" in name for name in _graph_names(fast(x.requires_grad_())))
    assert fused_depthwise == (size == 16)
    x = x.detach()
    exact = reference(x)
    fast_out, plain_out, exact = fast_out.detach(), plain_out.detach(), exact.detach()
    fast_error = float((fast_out - exact).abs().max())
    plain_error = float((plain_out - exact).abs().max())
    # Both round the same float32 computation to bf16 (8 significant bits) at each layer, in other
    # places and orders; 4x covers that spread, and 2**-8 of max|exact| (one bf16 rounding of the
    # output) a plain run that happens to round closer.
    assert fast_error <= 4 * plain_error + 2**-8 * float(exact.abs().max())
