"""The fused depthwise convolution + BatchNorm + activation against the three plain operators.

References: ``act(F.batch_norm(F.conv2d(x, w, groups=C), training=True))`` in float32 (what the fused
kernel replaces) and the same in float64 on the same inputs (the exact answer, to float32's eyes). The
fused kernel must be no further from float64 than the plain float32 operators are; in float64 its
analytic gradients must pass ``gradcheck``; the running statistics and batch count must follow
BatchNorm's; the thread count must not change a bit. With bfloat16 activations (what bf16 autocast hands
on) the stored convolution output must be the exact one rounded to bfloat16, and everything after it
exact to bfloat16 rounding against float64 on the same stored values.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from tests.helpers.conv_geometry import depthwise_geometries
from torch import nn

from sepconv.kernels import ACTIVATION_CODES, set_fused
from sepconv.kernels.depthwise import (
    depthwise_batch_norm_act,
    depthwise_conv2d,
    depthwise_kernel_applies,
    depthwise_kernels_available,
    fused_depthwise_norm_applies,
)
from sepconv.layers import ConvNormAct, DepthwiseSeparableBlock, InvertedResidual

pytestmark = pytest.mark.skipif(
    not depthwise_kernels_available(), reason="no C++ compiler: kernels not built"
)

ACTIVATIONS = {
    "identity": None,
    "relu": nn.ReLU(),
    "relu6": nn.ReLU6(),
    "silu": nn.SiLU(),
    "hardswish": nn.Hardswish(),
}
EPS = 1e-5
MOMENTUM = 0.1
#: What _run returns, in order.
RESULTS = (
    "output",
    "grad_input",
    "grad_weight",
    "grad_bn_weight",
    "grad_bn_bias",
    "running_mean",
    "running_var",
)


@st.composite
def configs(draw):
    geometry = draw(depthwise_geometries(min_channels=1))
    return {
        **geometry,
        "geometry": (list(geometry["stride"]), list(geometry["padding"]), list(geometry["dilation"])),
        "act": draw(st.sampled_from(sorted(ACTIVATIONS))),
        "seed": draw(st.integers(0, 2**31 - 1)),
    }


def _output_pixels(config: dict) -> int:
    (sh, sw), (ph, pw), (dh, dw) = config["geometry"]
    kh, kw = config["kernel"]
    out_h = (config["height"] + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    out_w = (config["width"] + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    return config["batch"] * out_h * out_w


def _plain(x, weight, gamma, beta, running_mean, running_var, geometry, act):
    z = F.conv2d(x, weight, None, *geometry, groups=x.shape[1])
    y = F.batch_norm(z, running_mean, running_var, gamma, beta, True, MOMENTUM, EPS)
    return y if act is None else act(y)


def _fused(x, weight, gamma, beta, running_mean, running_var, geometry, act):
    code = ACTIVATION_CODES[type(act)] if act is not None else 0
    return torch.ops.sepconv.dw_bn_act_train(
        x, weight, gamma, beta, running_mean, running_var, MOMENTUM, EPS, code, *geometry
    )


def _leaves(config: dict, dtype: torch.dtype) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(config["seed"])
    shape = (config["batch"], config["channels"], config["height"], config["width"])
    x = torch.randn(shape, generator=generator).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(config["channels"], 1, *config["kernel"], generator=generator)
    gamma = torch.empty(config["channels"]).uniform_(0.5, 1.5, generator=generator)
    beta = torch.empty(config["channels"]).uniform_(-0.5, 0.5, generator=generator)
    return [t.to(dtype).requires_grad_() for t in (x, weight, gamma, beta)]


def _run(function, leaves, config, grad_output):
    # in the parameters' dtype, as BatchNorm keeps them (float32 beside bfloat16 activations)
    running_mean = torch.zeros(config["channels"], dtype=leaves[1].dtype)
    running_var = torch.ones(config["channels"], dtype=leaves[1].dtype)
    out = function(*leaves, running_mean, running_var, config["geometry"], ACTIVATIONS[config["act"]])
    grads = torch.autograd.grad(out, leaves, grad_output.to(out.dtype))
    return [out, *grads, running_mean, running_var]


def _term_scales(leaves64: list[torch.Tensor], config: dict, grad_output: torch.Tensor) -> list[float]:
    """Per result, the size of the terms float32 adds up to make it (in float64): 16 ulps of it is the
    floor of the bound, since a result that cancels to near zero keeps the rounding of its terms."""
    x, weight, gamma, beta = (t.detach() for t in leaves64)
    z = F.conv2d(x, weight, None, *config["geometry"], groups=x.shape[1]).requires_grad_()
    var, mean = torch.var_mean(z.detach(), dim=(0, 2, 3), unbiased=False)
    act = ACTIVATIONS[config["act"]]
    y = F.batch_norm(z, None, None, gamma, beta, True, 0.0, EPS)
    (g,) = torch.autograd.grad(y if act is None else act(y), y, grad_output.double())
    g = g.abs()
    xhat = ((z.detach() - mean.view(1, -1, 1, 1)) / (var + EPS).sqrt().view(1, -1, 1, 1)).abs()
    # dz = gain (g - mean g - xhat mean(g xhat)) cancels to nothing when a channel has two pixels (xhat
    # is +-1 there): the terms it is made of, not dz itself, set the size of its rounding.
    gain = (gamma.abs() / (var + EPS).sqrt()).view(1, -1, 1, 1)
    dz = gain * (
        g + g.mean(dim=(0, 2, 3), keepdim=True) + xhat * (g * xhat).mean(dim=(0, 2, 3), keepdim=True)
    )
    pixels = dz.sum(dim=(0, 2, 3))  # per channel: sum of the dz terms over the pixels
    x_max = x.abs().amax(dim=(0, 2, 3))
    g_sum = 1.5 * grad_output.double().abs().sum(dim=(0, 2, 3))  # |d act| <= 1.5 (hardswish)
    xhat_max = xhat.amax(dim=(0, 2, 3))
    y_terms = (
        z.detach().abs() * (gamma.abs() / (var + EPS).sqrt()).view(1, -1, 1, 1)
    ).amax() + beta.abs().max()
    return [
        float(y_terms),  # output: z * scale + shift
        float((dz.amax(dim=(0, 2, 3)) * weight.abs().sum(dim=(1, 2, 3))).max()),  # grad_input: taps of dz * w
        float((pixels * x_max).max()),  # grad_weight: pixels of dz * x
        float((g_sum * xhat_max).max()),  # grad of BatchNorm's weight: pixels of g * xhat
        float(g_sum.max()),  # grad of BatchNorm's bias: pixels of g
        float(z.detach().abs().max()),  # running mean
        float(z.detach().square().max()),  # running variance
    ]


@given(config=configs().filter(lambda c: _output_pixels(c) > 1))
def test_fused_is_as_close_to_float64_as_the_plain_float32_operators(config):
    leaves32 = _leaves(config, torch.float32)
    leaves64 = [t.detach().double().requires_grad_() for t in leaves32]
    probe = _plain(*[t.detach() for t in leaves32], None, None, config["geometry"], None)
    grad_output = torch.randn(probe.shape, generator=torch.Generator().manual_seed(config["seed"] + 1))
    fused = _run(_fused, leaves32, config, grad_output)
    plain = _run(_plain, leaves32, config, grad_output)
    exact = _run(_plain, leaves64, config, grad_output)
    scales = _term_scales(leaves64, config, grad_output)
    for name, got, ours, reference, scale in zip(RESULTS, fused, plain, exact, scales):
        assert got.shape == reference.shape, name
        fused_error = float((got.detach().double() - reference.detach()).abs().max())
        plain_error = float((ours.detach().double() - reference.detach()).abs().max())
        # Both are float32 computations of the same sums in different orders, so their rounding errors
        # are of one size; 4x covers the spread between two orders. The floor, 2**-20 (16 float32 ulps)
        # of the terms summed, covers a plain result that happens to round exactly.
        bound = 4 * plain_error + 2**-20 * scale
        assert fused_error <= bound, f"{name}: |fused - float64| {fused_error:.3g} > {bound:.3g}"


# (batch, channels, height, width, kernel, (stride, padding, dilation)): the row kernels' paths (runs of
# 3 and 5 taps, blocks of 8 and 4 outputs, borders, strided phases of grad_input, dilation, channels
# that leave a tail after the 8-wide vectors, a batch of one, a 1x1 kernel, a 2x2 map).
BF16_GEOMETRIES = [
    (2, 16, 14, 14, (3, 3), ([1, 1], [1, 1], [1, 1])),
    (2, 20, 9, 11, (3, 3), ([2, 2], [1, 1], [1, 1])),
    (1, 11, 8, 9, (5, 5), ([1, 1], [2, 2], [1, 1])),
    (3, 8, 10, 10, (3, 3), ([1, 1], [2, 2], [2, 2])),
    (2, 13, 7, 8, (5, 5), ([2, 2], [2, 2], [1, 1])),
    (2, 24, 4, 4, (1, 1), ([1, 1], [0, 0], [1, 1])),
    (4, 9, 6, 7, (2, 4), ([2, 1], [1, 2], [2, 1])),
    (8, 32, 2, 2, (3, 3), ([2, 2], [1, 1], [1, 1])),
]


def _plain_on_stored(z_stored, x, weight, gamma, beta, running_mean, running_var, geometry, act):
    """The plain operators, with the convolution's output replaced by the fused kernel's stored z (its
    gradient still flows through the convolution): float64 then differs from the kernel only by the
    kernel's float32 arithmetic and bfloat16 outputs."""
    z = F.conv2d(x, weight, None, *geometry, groups=x.shape[1])
    z = z + (z_stored.to(z.dtype) - z).detach()
    y = F.batch_norm(z, running_mean, running_var, gamma, beta, True, MOMENTUM, EPS)
    return y if act is None else act(y)


@pytest.mark.parametrize("act_name", sorted(ACTIVATIONS))
@pytest.mark.parametrize("case", range(len(BF16_GEOMETRIES)))
def test_bfloat16_is_exact_to_bfloat16_rounding_against_float64(case, act_name):
    batch, channels, height, width, kernel, geometry = BF16_GEOMETRIES[case]
    config = {
        "batch": batch,
        "channels": channels,
        "height": height,
        "width": width,
        "kernel": kernel,
        "geometry": geometry,
        "act": act_name,
        "seed": 100 + case,
    }
    leaves32 = _leaves(config, torch.float32)
    # As under bf16 autocast: bfloat16 activations, float32 parameters.
    x = leaves32[0].detach().bfloat16()
    fused_leaves = [x.clone().requires_grad_(), *leaves32[1:]]
    act = ACTIVATIONS[act_name]
    code = ACTIVATION_CODES[type(act)] if act is not None else 0
    params = [t.detach() for t in leaves32[1:]]
    _, z_stored, _, _ = torch.ops.sepconv.dw_bn_act_forward(x, *params, *geometry, EPS, code)
    assert z_stored.dtype == torch.bfloat16

    # The stored z is the exact convolution rounded to bfloat16: half an ulp, at most 2^-8 relative,
    # plus float32's error in the sum (16 ulps of the summed terms).
    x64, weight64 = x.double(), params[0].double()
    exact_z = F.conv2d(x64, weight64, None, *geometry, groups=channels)
    z_terms = F.conv2d(x64.abs(), weight64.abs(), None, *geometry, groups=channels)
    assert bool(((z_stored.double() - exact_z).abs() <= 2**-8 * exact_z.abs() + 2**-20 * z_terms).all())

    probe = _plain(*[t.detach() for t in leaves32], None, None, geometry, None)
    generator = torch.Generator().manual_seed(config["seed"] + 1)
    grad_output = torch.randn(probe.shape, generator=generator).bfloat16()
    fused = _run(_fused, fused_leaves, config, grad_output)
    assert fused[0].dtype == fused[1].dtype == torch.bfloat16
    assert all(result.dtype == torch.float32 for result in fused[2:])

    def on_stored(*args):
        return _plain_on_stored(z_stored, *args)

    leaves64 = [x64.clone().requires_grad_(), *[t.detach().double().requires_grad_() for t in leaves32[1:]]]
    plain_leaves = [x.float().requires_grad_(), *[t.detach().clone().requires_grad_() for t in leaves32[1:]]]
    exact = _run(on_stored, leaves64, config, grad_output.double())
    plain = _run(on_stored, plain_leaves, config, grad_output.float())
    scales = _term_scales(leaves64, config, grad_output.float())
    for index, (name, got, ours, reference, scale) in enumerate(zip(RESULTS, fused, plain, exact, scales)):
        error = (got.detach().double() - reference.detach()).abs()
        plain_error = float((ours.detach().double() - reference.detach()).abs().max())
        # float32 arithmetic as in the float32 test (4x the plain operators' error, 16 ulps of the terms);
        # the output and grad_input are then rounded to bfloat16: half an ulp of the float32 value, at
        # most 2^-8 of it, so 2^-8 of the reference plus (1 + 2^-8) x the float32 error.
        arithmetic = 4 * plain_error + 2**-20 * scale
        bound = 2**-8 * reference.detach().abs() + (1 + 2**-8) * arithmetic if index < 2 else arithmetic
        assert bool((error <= bound).all()), f"{name}: worst excess {float((error - bound).max()):.3g}"


def test_bfloat16_stores_the_float32_kernels_sums_rounded_as_torch_rounds_them():
    # The bfloat16 path widens each value and sums in the float32 kernel's order, so its stored z is
    # that kernel's z rounded to nearest-even (vectorized here, by c10::BFloat16 in torch): bit for bit,
    # NaN included.
    generator = torch.Generator().manual_seed(21)
    x = torch.randn(2, 19, 11, 13, generator=generator).contiguous(memory_format=torch.channels_last)
    x[1, 3, 5, 6] = float("nan")
    x = x.bfloat16()
    weight = torch.randn(19, 1, 3, 3, generator=generator)
    geometry = ([1, 1], [1, 1], [1, 1])
    _, z, mean, var = torch.ops.sepconv.dw_bn_act_forward(
        x, weight, torch.ones(19), torch.zeros(19), *geometry, EPS, 0
    )
    z32 = torch.ops.sepconv.depthwise_forward(x.float(), weight, *geometry)
    assert torch.equal(z.isnan(), z32.isnan()) and int(z.isnan().sum()) == 9
    assert torch.equal(z.nan_to_num(), z32.bfloat16().nan_to_num())
    assert mean.dtype == var.dtype == torch.float32


@pytest.mark.parametrize(
    ("kernel", "geometry", "act"),
    [
        ((3, 3), ([1, 1], [1, 1], [1, 1]), 0),
        ((2, 4), ([2, 1], [1, 2], [2, 1]), 3),
        ((3, 1), ([2, 2], [0, 1], [1, 2]), 3),
        ((3, 3), ([1, 1], [1, 1], [1, 1]), 4),
    ],
    ids=["identity-3x3", "silu-2x4-strided-dilated", "silu-3x1", "hardswish-3x3"],
)
def test_gradcheck_float64(kernel, geometry, act):
    generator = torch.Generator().manual_seed(7)
    x = torch.randn(2, 5, 6, 7, dtype=torch.float64, generator=generator)
    x = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    weight = torch.randn(5, 1, *kernel, dtype=torch.float64, generator=generator, requires_grad=True)
    gamma = torch.rand(5, dtype=torch.float64, generator=generator).add(0.5).requires_grad_()
    beta = torch.randn(5, dtype=torch.float64, generator=generator).requires_grad_()
    op = torch.ops.sepconv.dw_bn_act_train

    def function(a, b, c, d):
        return op(a, b, c, d, None, None, MOMENTUM, EPS, act, *geometry)

    assert torch.autograd.gradcheck(function, (x, weight, gamma, beta))


@pytest.mark.parametrize("momentum", [0.1, None])
def test_conv_norm_act_keeps_batchnorm_running_statistics(momentum):
    torch.manual_seed(3)
    fused = ConvNormAct(12, 12, 3, groups=12, act_layer="relu6").train()
    fused[1].momentum = momentum
    plain = copy.deepcopy(fused)
    set_fused(plain, False)
    for _ in range(3):
        x = torch.randn(2, 12, 16, 16).contiguous(memory_format=torch.channels_last)
        out = fused(x)
        assert "DwBnAct" in out.grad_fn.name()
        plain(x)
    assert int(fused[1].num_batches_tracked) == int(plain[1].num_batches_tracked) == 3
    # One float32 statistic per step, each a mean of 2 * 16 * 16 values: a few ulps of the values.
    torch.testing.assert_close(fused[1].running_mean, plain[1].running_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fused[1].running_var, plain[1].running_var, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_results_are_identical_at_one_and_two_threads(dtype):
    # Every sum runs over a fixed split of the rows, added in order: the thread count cannot change a bit.
    generator = torch.Generator().manual_seed(11)
    x = (
        torch.randn(3, 24, 20, 18, generator=generator)
        .to(dtype)
        .contiguous(memory_format=torch.channels_last)
    )
    leaves = [x, torch.randn(24, 1, 3, 3, generator=generator), torch.rand(24, generator=generator) + 0.5]
    leaves = [t.requires_grad_() for t in (*leaves, torch.randn(24, generator=generator))]
    grad_output = torch.randn(3, 24, 20, 18, generator=generator).to(dtype)
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            out = _fused(*leaves, None, None, ([1, 1], [1, 1], [1, 1]), nn.SiLU())
            results.append([out, *torch.autograd.grad(out, leaves, grad_output)])
    finally:
        torch.set_num_threads(threads)
    for one, two in zip(*results):
        assert torch.equal(one, two)


def _block_input(channels: int, size: int) -> torch.Tensor:
    return torch.randn(2, channels, size, size).contiguous(memory_format=torch.channels_last)


def test_the_rule_fuses_where_the_depthwise_kernel_pays():
    norm, act = nn.BatchNorm2d(8).train(), nn.ReLU()
    weight = torch.randn(8, 1, 3, 3)
    # Stride 1 on maps of 14x14 or more, or maps of 4x4 or less (the depthwise kernel's own rule), and
    # stride 2 at any size; not stride 1 on 8x8, nor other strides where the kernel does not pay.
    assert fused_depthwise_norm_applies(_block_input(8, 16), weight, (1, 1), norm, act)
    assert fused_depthwise_norm_applies(_block_input(8, 4), weight, (1, 1), norm, act)
    assert fused_depthwise_norm_applies(_block_input(8, 16), weight, (2, 2), norm, act)
    assert fused_depthwise_norm_applies(_block_input(8, 8), weight, (2, 2), norm, act)
    assert not fused_depthwise_norm_applies(_block_input(8, 8), weight, (1, 1), norm, act)
    assert not fused_depthwise_norm_applies(_block_input(8, 16), weight, (1, 2), norm, act)
    # bfloat16 activations with a float32 or bfloat16 weight (summed in float32); not a float64 weight.
    bf16 = _block_input(8, 16).bfloat16()
    assert fused_depthwise_norm_applies(bf16, weight, (1, 1), norm, act)
    assert fused_depthwise_norm_applies(bf16, weight.bfloat16(), (1, 1), norm, act)
    assert not fused_depthwise_norm_applies(bf16, weight.double(), (1, 1), norm, act)
    assert not fused_depthwise_norm_applies(bf16.half(), weight.half(), (1, 1), norm, act)
    # Not where the kernel does not apply (NCHW), nor when the pair may not fuse.
    assert not fused_depthwise_norm_applies(torch.randn(2, 8, 16, 16), weight, (1, 1), norm, act)
    assert not fused_depthwise_norm_applies(_block_input(8, 16), weight, (1, 1), norm, nn.GELU())
    assert not fused_depthwise_norm_applies(_block_input(8, 16), weight, (1, 1), norm.eval(), act)


def _depthwise_fused(module: nn.Module, x: torch.Tensor) -> bool:
    names = []
    node = module(x).grad_fn
    stack = [node]
    while stack:
        node = stack.pop()
        if node is not None:
            names.append(node.name())
            stack.extend(next_node for next_node, _ in node.next_functions)
    return any("DwBnAct" in name for name in names)


def test_blocks_use_the_fused_kernel_and_set_fused_turns_it_off():
    x = _block_input(16, 16).requires_grad_()
    for block in (
        ConvNormAct(16, 16, 3, groups=16),
        DepthwiseSeparableBlock(16, 24),
        InvertedResidual(16, 16, stride=1, expand_ratio=2),
    ):
        block.train()
        assert _depthwise_fused(block, x), type(block).__name__
        set_fused(block, False)
        assert not _depthwise_fused(block, x), type(block).__name__
    # A bias, a hook on the convolution, eval mode: the modules run one by one.
    biased = ConvNormAct(16, 16, 3, groups=16, bias=True).train()
    assert not _depthwise_fused(biased, x)
    hooked = ConvNormAct(16, 16, 3, groups=16).train()
    hooked[0].register_forward_hook(lambda *args: None)
    assert not _depthwise_fused(hooked, x)


def test_fallback_is_the_plain_modules_where_the_rule_does_not_hold():
    torch.manual_seed(5)
    norm = nn.BatchNorm2d(8).train()
    reference_norm = copy.deepcopy(norm)
    x = _block_input(8, 8)  # 8x8 at stride 1: the fused operator does not pay there
    weight = torch.randn(8, 1, 3, 3)
    out = depthwise_batch_norm_act(x, weight, 1, 1, 1, norm, nn.GELU())
    expected = F.gelu(reference_norm(F.conv2d(x, weight, None, 1, 1, 1, groups=8)))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


def test_a_one_by_one_map_runs_the_kernel_in_either_layout():
    # A 1x1 map has the same bytes as NCHW and channels_last; PyTorch's backward is slow there.
    x = torch.randn(4, 16, 1, 1, requires_grad=True)
    weight = torch.randn(16, 1, 3, 3, requires_grad=True)
    assert x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    assert depthwise_kernel_applies(x, weight)
    assert not depthwise_kernel_applies(torch.randn(4, 1, 5, 5), torch.randn(1, 1, 3, 3))
    # The kernel's values and gradients, against F.conv2d (only the centre tap sees the 1x1 map).
    out = depthwise_conv2d(x, weight, None, 1, 1, 1)
    assert "depthwise" in out.grad_fn.name()
    reference = F.conv2d(x, weight, None, 1, 1, 1, groups=16)
    grad_output = torch.randn_like(reference)
    torch.testing.assert_close(out, reference, rtol=1e-6, atol=1e-6)
    for grad, expected in zip(
        torch.autograd.grad(out, (x, weight), grad_output),
        torch.autograd.grad(reference, (x, weight), grad_output),
    ):
        torch.testing.assert_close(grad, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_operators_pass_opcheck(dtype):
    x = torch.randn(2, 8, 7, 9).to(dtype).contiguous(memory_format=torch.channels_last)
    weight, gamma, beta = torch.randn(8, 1, 3, 2), torch.rand(8) + 0.5, torch.randn(8)
    geometry = ([2, 1], [1, 0], [1, 2])
    y, z, mean, var = torch.ops.sepconv.dw_bn_act_forward(x, weight, gamma, beta, *geometry, EPS, 1)
    checks = ("test_schema", "test_faketensor")
    torch.library.opcheck(
        torch.ops.sepconv.dw_bn_act_forward, (x, weight, gamma, beta, *geometry, EPS, 1), test_utils=checks
    )
    torch.library.opcheck(
        torch.ops.sepconv.dw_bn_act_backward,
        (torch.randn_like(y), x, weight, z, gamma, beta, mean, var, *geometry, EPS, 1),
        test_utils=checks,
    )
