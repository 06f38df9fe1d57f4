"""The depthwise C++ kernel against ``F.conv2d(groups=C)`` with autograd: values, both gradients, fallback."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from tests.helpers.conv_geometry import depthwise_geometries

from sepconv.kernels.depthwise import (
    FORWARD_OPERATORS,
    depthwise_conv2d,
    depthwise_kernel_applies,
    depthwise_kernel_pays,
    depthwise_kernels_available,
)

pytestmark = pytest.mark.skipif(
    not depthwise_kernels_available(), reason="no C++ compiler: kernels not built"
)

# fp32 tolerance, relative to max|reference|. Every output is a sum of at most 25 products (forward,
# grad_input: kernel up to 5x5) or, for grad_weight, of at most batch * out_h * out_w <= 3 * 15 * 15 = 675
# products. The two implementations add in different orders; rounding errors of such sums grow like
# sqrt(terms) * 2**-24 ~ 1.5e-6 of the sum of |products|, which for standard-normal data stays within a
# few times max|reference|. 1e-5 keeps that margin, and a wrong tap or a missed border term gives O(1).
FP32_RELATIVE = 1e-5


def _relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    return ((value - reference).abs().max() / reference.abs().max().clamp_min(1e-30)).item()


def _inputs(config: dict, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (config["batch"], config["channels"], config["height"], config["width"])
    x = torch.randn(shape, dtype=dtype).contiguous(memory_format=torch.channels_last).requires_grad_()
    weight = torch.randn(config["channels"], 1, *config["kernel"], dtype=dtype, requires_grad=True)
    return x, weight


@pytest.mark.parametrize("forward", FORWARD_OPERATORS)
@given(config=depthwise_geometries())
def test_forward_and_gradients_match_conv2d(forward, config):
    # Both forward operators (hand-written, oneDNN) with the hand-written backward.
    x, weight = _inputs(config)
    geometry = (config["stride"], config["padding"], config["dilation"])
    assert depthwise_kernel_applies(x, weight)
    out = getattr(torch.ops.sepconv, forward)(x, weight, *geometry)
    reference = F.conv2d(x, weight, None, *geometry, groups=config["channels"])
    grad_output = torch.randn_like(reference)
    grad_x, grad_weight = torch.autograd.grad(out, (x, weight), grad_output)
    ref_grad_x, ref_grad_weight = torch.autograd.grad(reference, (x, weight), grad_output)
    assert out.shape == reference.shape
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert _relative_error(out, reference) <= FP32_RELATIVE
    assert _relative_error(grad_x, ref_grad_x) <= FP32_RELATIVE
    assert _relative_error(grad_weight, ref_grad_weight) <= FP32_RELATIVE


@given(config=depthwise_geometries())
def test_bfloat16_is_the_float32_kernel_rounded_and_exact_to_bfloat16_rounding(config):
    # As under bf16 autocast: bfloat16 activations, a float32 weight. Each value is widened as it is
    # loaded and summed in the float32 kernel's order, so the outputs are that kernel's, given the same
    # (widened) inputs, rounded to bfloat16 (to nearest even, as torch rounds): bit for bit; grad_weight,
    # kept in float32, bit for bit unrounded.
    x32, weight = _inputs(config)
    x = x32.detach().bfloat16().requires_grad_()
    geometry = (config["stride"], config["padding"], config["dilation"])
    assert depthwise_kernel_applies(x, weight)
    out = torch.ops.sepconv.depthwise_forward(x, weight, *geometry)
    assert out.dtype == torch.bfloat16 and out.is_contiguous(memory_format=torch.channels_last)
    grad_output = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).bfloat16()
    grad_x, grad_weight = torch.autograd.grad(out, (x, weight), grad_output)
    assert grad_x.dtype == torch.bfloat16 and grad_weight.dtype == torch.float32

    widened = x.detach().float().contiguous(memory_format=torch.channels_last).requires_grad_()
    out32 = torch.ops.sepconv.depthwise_forward(widened, weight, *geometry)
    grad_x32, grad_weight32 = torch.autograd.grad(out32, (widened, weight), grad_output.float())
    assert torch.equal(out, out32.bfloat16())
    assert torch.equal(grad_x, grad_x32.bfloat16())
    assert torch.equal(grad_weight, grad_weight32)

    # And against float64 on the same inputs: float32's error (FP32_RELATIVE, as above), then half a
    # bfloat16 ulp, at most 2^-8 of the value, for the rounded outputs.
    x64, weight64 = x.detach().double().requires_grad_(), weight.detach().double().requires_grad_()
    out64 = F.conv2d(x64, weight64, None, *geometry, groups=config["channels"])
    grads64 = torch.autograd.grad(out64, (x64, weight64), grad_output.double())
    for got, exact in ((out, out64), (grad_x, grads64[0])):
        bound = 2**-8 * exact.detach().abs() + (1 + 2**-8) * FP32_RELATIVE * exact.detach().abs().max()
        assert bool(((got.double() - exact.detach()).abs() <= bound).all())
    assert _relative_error(grad_weight.double(), grads64[1]) <= FP32_RELATIVE


@pytest.mark.parametrize(
    ("kernel", "stride", "padding", "dilation"),
    [((3, 3), (1, 1), (1, 1), (1, 1)), ((2, 4), (2, 1), (1, 2), (2, 1)), ((3, 1), (2, 2), (0, 1), (1, 2))],
)
def test_gradcheck_float64(kernel, stride, padding, dilation):
    # The hand-written forward (oneDNN has no float64 kernels) with the shared backward.
    config = {"batch": 2, "channels": 5, "height": 6, "width": 7, "kernel": kernel}
    x, weight = _inputs(config, torch.float64)
    operator = torch.ops.sepconv.depthwise_forward
    assert torch.autograd.gradcheck(lambda a, b: operator(a, b, stride, padding, dilation), (x, weight))


def test_depthwise_conv2d_with_bias_matches_conv2d():
    # A shape where the kernel pays (stride 1, 14x14 or more), so the custom operators run.
    x = torch.randn(2, 12, 16, 14).contiguous(memory_format=torch.channels_last).requires_grad_()
    weight = torch.randn(12, 1, 3, 3, requires_grad=True)
    bias = torch.randn(12, requires_grad=True)
    assert depthwise_kernel_applies(x, weight) and depthwise_kernel_pays(x, (1, 1))
    out = depthwise_conv2d(x, weight, bias, 1, 1, 1)
    reference = F.conv2d(x, weight, bias, 1, 1, 1, groups=12)
    assert out.grad_fn.name() != reference.grad_fn.name()  # the custom operator, not ConvolutionBackward
    grad_output = torch.randn_like(reference)
    grads = torch.autograd.grad(out, (x, weight, bias), grad_output)
    ref_grads = torch.autograd.grad(reference, (x, weight, bias), grad_output)
    assert _relative_error(out, reference) <= FP32_RELATIVE
    for grad, ref_grad in zip(grads, ref_grads):
        assert _relative_error(grad, ref_grad) <= FP32_RELATIVE
    with torch.no_grad():
        assert _relative_error(depthwise_conv2d(x, weight, bias, 1, 1, 1), reference) <= FP32_RELATIVE


def test_kernel_pays_on_tiny_maps_and_at_stride_1_on_large_maps():
    x = torch.empty(1, 8, 14, 20)
    assert depthwise_kernel_pays(x, (1, 1))
    assert not depthwise_kernel_pays(x, (2, 2))
    assert not depthwise_kernel_pays(torch.empty(1, 8, 7, 20), (1, 1))
    # PyTorch's slow path on maps of 4x4 or less, at any stride
    assert depthwise_kernel_pays(torch.empty(1, 8, 4, 20), (2, 2))
    assert depthwise_kernel_pays(torch.empty(1, 8, 1, 1), (1, 1))
    assert not depthwise_kernel_pays(torch.empty(1, 8, 5, 5), (1, 1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_grad_weight_is_identical_for_any_thread_count(dtype):
    # grad_weight sums over a fixed split of the rows, so the thread count cannot change a bit.
    x = torch.randn(4, 16, 20, 20).to(dtype).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(16, 1, 3, 3)
    grad_output = torch.randn(4, 16, 20, 20).to(dtype).contiguous(memory_format=torch.channels_last)
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            results.append(
                torch.ops.sepconv.depthwise_backward(grad_output, x, weight, [1, 1], [1, 1], [1, 1])
            )
    finally:
        torch.set_num_threads(threads)
    for grad_x, grad_weight in results[1:]:
        assert torch.equal(grad_x, results[0][0])
        assert torch.equal(grad_weight, results[0][1])


@pytest.mark.parametrize(
    ("x", "weight"),
    [
        (torch.randn(2, 6, 8, 8), torch.randn(6, 1, 3, 3)),  # contiguous NCHW input
        (
            torch.randn(2, 6, 8, 8).contiguous(memory_format=torch.channels_last),
            torch.randn(12, 1, 3, 3),
        ),  # x2
        (
            torch.randn(2, 6, 8, 8, dtype=torch.float16).contiguous(memory_format=torch.channels_last),
            torch.randn(6, 1, 3, 3, dtype=torch.float16),
        ),
    ],
    ids=["nchw", "depth-multiplier-2", "float16"],
)
def test_falls_back_to_conv2d(x, weight):
    assert not depthwise_kernel_applies(x, weight)
    out = depthwise_conv2d(x, weight, None, 1, 1, 1)
    assert torch.equal(out, F.conv2d(x, weight, None, 1, 1, 1, groups=6))


@pytest.mark.parametrize("forward", FORWARD_OPERATORS)
def test_operator_registration_passes_opcheck(forward):
    # Checks the schema, the fake (meta) implementation and the autograd registration together.
    x = torch.randn(2, 8, 7, 9).contiguous(memory_format=torch.channels_last).requires_grad_()
    weight = torch.randn(8, 1, 3, 2, requires_grad=True)
    # The AOT-dispatch check (seconds, compiles a graph) is left to the torch.compile users.
    torch.library.opcheck(
        getattr(torch.ops.sepconv, forward),
        (x, weight, [2, 1], [1, 0], [1, 2]),
        test_utils=("test_schema", "test_autograd_registration", "test_faketensor"),
    )


def test_rejects_a_malformed_stride():
    x = torch.randn(1, 4, 5, 5).contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="stride"):
        depthwise_conv2d(x, torch.randn(4, 1, 3, 3), None, (1, 2, 3))
