"""The fused BatchNorm + activation kernel against the plain modules ``act(nn.BatchNorm2d(x))`` (autograd).

The reference is always stock PyTorch in training mode: forward, input/weight/bias gradients and the
running statistics must agree to float32 rounding, in float64 the analytic gradients must pass
``gradcheck``, and bfloat16 must agree to bfloat16 rounding. The kernel is built (or loaded from the
cache) on first use; without a compiler these tests would exercise the fallback, so they require it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from sepconv.kernels import ACTIVATION_CODES, batch_norm_act, can_fuse, kernels_available

pytestmark = pytest.mark.skipif(not kernels_available(), reason="the C++ kernels could not be built here")

ACTIVATIONS = {
    "none": None,
    "identity": nn.Identity(),
    "relu": nn.ReLU(),
    "relu_inplace": nn.ReLU(inplace=True),
    "relu6": nn.ReLU6(),
    "silu": nn.SiLU(),
    "hardswish": nn.Hardswish(),
}
# Largest slope of any of these activations (hardswish' = z/3 + 1/2 reaches 1.5 at z = 3): an error in
# the pre-activation reaches the output at most this much larger.
MAX_SLOPE = 1.5
# Where the activations' derivatives jump (ReLU: 0; ReLU6: 0, 6; hardswish: -3, 3).
KINKS = {"relu": (0.0,), "relu6": (0.0, 6.0), "hardswish": (-3.0, 3.0)}
# The kinks a rounding can carry z across (rounding keeps the sign, so never the one at 0).
KINKS_AWAY_FROM_ZERO = {"relu6": (6.0,), "hardswish": (-3.0, 3.0)}
LAYOUTS = ("contiguous", "channels_last", "sliced", "sliced_channels_last", "permuted")
EPS = 1e-5  # nn.BatchNorm2d's default


def _apply(act: nn.Module | None, z: torch.Tensor) -> torch.Tensor:
    return z if act is None else act(z)


def _view_in_layout(base: torch.Tensor, layout: str) -> torch.Tensor:
    """The N, C, H, W tensor that ``base`` (made by :func:`_base_for`) stores in ``layout``."""
    if layout == "sliced":
        return base[..., ::2]
    if layout == "sliced_channels_last":
        return base[:, ::2]  # every other channel of a channels_last tensor
    if layout == "permuted":
        return base.permute(1, 0, 2, 3)  # stored as C, N, H, W: neither contiguous nor channels_last
    return base


def _base_for(shape: tuple[int, int, int, int], layout: str, generator: torch.Generator) -> torch.Tensor:
    n, c, h, w = shape
    if layout == "sliced":
        return torch.randn(n, c, h, 2 * w, generator=generator)
    if layout == "sliced_channels_last":
        return torch.randn(n, 2 * c, h, w, generator=generator).contiguous(memory_format=torch.channels_last)
    if layout == "permuted":
        return torch.randn(c, n, h, w, generator=generator)
    x = torch.randn(n, c, h, w, generator=generator)
    return x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x


def _max_abs_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return float((got.detach().double() - expected.detach().double()).abs().max())


def _assert_within(got: torch.Tensor, expected: torch.Tensor, bound: float, what: str) -> None:
    error = _max_abs_error(got, expected)
    assert error <= bound, f"{what}: max |fused - plain| = {error:.3g} > bound {bound:.3g}"


def _randomize_affine(norm: nn.BatchNorm2d, generator: torch.Generator) -> None:
    if norm.affine:
        with torch.no_grad():
            norm.weight.copy_(torch.empty(norm.num_features).uniform_(-2, 2, generator=generator))
            norm.bias.copy_(torch.empty(norm.num_features).uniform_(-1, 1, generator=generator))


@settings(max_examples=50, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 4), st.integers(1, 8), st.integers(1, 6), st.integers(1, 6)).filter(
        lambda s: s[0] * s[2] * s[3] > 1  # batch norm needs more than one value per channel
    ),
    layout=st.sampled_from(LAYOUTS),
    act_name=st.sampled_from(sorted(ACTIVATIONS)),
    affine=st.booleans(),
    momentum=st.sampled_from([0.1, None]),
    track_running_stats=st.booleans(),
    log10_scale=st.floats(-2, 2),
    offset_in_stds=st.floats(-4, 4),
    seed=st.integers(0, 2**31 - 1),
)
def test_fused_matches_plain_modules_over_two_training_steps(
    shape, layout, act_name, affine, momentum, track_running_stats, log10_scale, offset_in_stds, seed
):
    generator = torch.Generator().manual_seed(seed)
    act = ACTIVATIONS[act_name]
    channels = shape[1]
    fused_norm = nn.BatchNorm2d(
        channels, momentum=momentum, affine=affine, track_running_stats=track_running_stats
    )
    _randomize_affine(fused_norm, generator)
    plain_norm = copy.deepcopy(fused_norm)
    scale = 10.0**log10_scale
    for step in range(2):
        base = _base_for(shape, layout, generator) * scale + offset_in_stds * scale
        fused_base = base.clone().requires_grad_()
        plain_base = base.clone().requires_grad_()
        x = _view_in_layout(fused_base, layout)
        assert x.shape == shape
        fused_out = batch_norm_act(x, fused_norm, act)
        plain_out = _apply(act, plain_norm(_view_in_layout(plain_base, layout)))
        grad_out = torch.randn(shape, generator=generator)
        fused_out.backward(grad_out)
        plain_out.backward(grad_out)

        x_detached = x.detach().double()
        var, mean = torch.var_mean(x_detached, dim=(0, 2, 3), unbiased=False)
        invstd = (var + EPS).rsqrt()
        abs_weight = plain_norm.weight.detach().double().abs() if affine else torch.ones_like(var)
        abs_bias = plain_norm.bias.detach().double().abs() if affine else torch.zeros_like(var)
        gain = invstd * abs_weight
        # Both paths (PyTorch's CPU batch norm too) compute y = act(x * alpha + beta), alpha = w * invstd,
        # beta = b - mean * alpha, in float32 from statistics accumulated in at least float32 (the kernel:
        # float64). They differ by a few float32 ulps (6e-8) of the terms |x| |alpha| + |b|, which exceed
        # |z| by |mean| / std (large for a near-constant channel), and the activation's slope is <= 1.5:
        # 1e-5 of max(|x| gain + |b|) holds with margin (observed <= 1e-7 of it).
        x_abs_max = x_detached.abs().amax(dim=(0, 2, 3))
        y_scale = float((x_abs_max * gain + abs_bias).max())
        _assert_within(fused_out, plain_out, 1e-5 * y_scale, f"step {step} output")

        # The input gradient is gain * (g - mean(g) - x_hat * mean(g x_hat)), g = dy * act'(z): terms of
        # size <= gain * 1.5 |dy| that cancel (exactly, when a channel has two values), so the rounding
        # is relative to the terms, not to the result: 1e-5 of max(gain) * 1.5 * max |dy|.
        dx_scale = float(gain.max()) * MAX_SLOPE * float(grad_out.abs().max())
        _assert_within(fused_base.grad, plain_base.grad, 1e-5 * dx_scale, f"step {step} input gradient")

        if affine:
            # Per-channel float32 sums of g * x_hat and g: a sum's rounding is relative to the sum of
            # the terms' magnitudes (here bounded by 1.5 |dy| |x_hat| and 1.5 |dy|), not to the sum.
            x_hat = (x_detached - mean.view(1, -1, 1, 1)) * invstd.view(1, -1, 1, 1)
            g_bound = MAX_SLOPE * grad_out.double().abs()
            dw_scale = float((g_bound * x_hat.abs()).sum(dim=(0, 2, 3)).max())
            db_scale = float(g_bound.sum(dim=(0, 2, 3)).max())
            _assert_within(fused_norm.weight.grad, plain_norm.weight.grad, 1e-5 * dw_scale, "weight gradient")
            _assert_within(fused_norm.bias.grad, plain_norm.bias.grad, 1e-5 * db_scale, "bias gradient")
            for norm in (fused_norm, plain_norm):
                norm.weight.grad = norm.bias.grad = None

        if track_running_stats:
            assert fused_norm.num_batches_tracked.item() == plain_norm.num_batches_tracked.item() == step + 1
            # Both accumulate the statistics in float64 (PyTorch: two passes, sum then sum of squared
            # deviations; the kernel: sums of x and x^2) and round once to float32, then mix them with
            # the same float32 lerp: a few ulps (6e-8) of max |x| for the mean and of the variance for the
            # variance. (Near-constant channels cost both more: ~(mean / std)^2 x 1e-16 for the x^2 sums,
            # and as much from PyTorch's float32 mean; that reaches 1e-5 only at mean / std > 1e5, which
            # random normal draws give with probability ~1e-5 per two-value channel.)
            mean_scale = max(float(plain_norm.running_mean.abs().max()), float(x_detached.abs().max()))
            _assert_within(
                fused_norm.running_mean, plain_norm.running_mean, 1e-5 * mean_scale, "running_mean"
            )
            var_scale = float(plain_norm.running_var.abs().max())
            _assert_within(fused_norm.running_var, plain_norm.running_var, 1e-5 * var_scale, "running_var")
        else:
            assert fused_norm.running_mean is None and fused_norm.num_batches_tracked is None
        if layout in ("contiguous", "channels_last"):
            assert fused_out.stride() == plain_out.stride()
            assert fused_base.grad.stride() == plain_base.grad.stride()


def _kink_free_input(
    kinks: tuple[float, ...],
    shape: tuple[int, int, int, int],
    weight: torch.Tensor,
    bias: torch.Tensor,
    margin: float,
    transform: Callable[[torch.Tensor], torch.Tensor] = lambda x: x,
) -> torch.Tensor:
    """``transform(x)`` for a random x such that the normalized values z all lie at least ``margin`` away
    from the ``kinks`` of the activation.

    At a kink the derivative jumps, so a finite difference straddling it (gradcheck) or a rounding that
    moves z across it (bfloat16) changes the gradient by a whole ``dy``: such inputs test nothing.
    """
    generator = torch.Generator().manual_seed(0)
    for _ in range(1000):
        x = transform(torch.randn(shape, generator=generator, dtype=weight.dtype))
        z = F.batch_norm(x.double(), None, None, weight.double(), bias.double(), training=True, eps=EPS)
        distance = min((float((z - kink).abs().min()) for kink in kinks), default=margin)
        if distance >= margin:
            return x
    raise AssertionError(f"no input of shape {shape} avoids the kinks {kinks} by {margin}")


def _gradcheck_inputs(act_name: str, layout: str) -> tuple[int, tuple[torch.Tensor, ...]]:
    """The activation's code and float64 (x, weight, bias) leaves for gradcheck, x away from the kinks."""
    code = ACTIVATION_CODES[type(ACTIVATIONS[act_name])]
    # Weights of 2-3 spread z over about +-7, so every piece of ReLU6 and hardswish is exercised.
    weight = torch.tensor([2.0, -3.0], dtype=torch.float64)
    bias = torch.tensor([0.5, -1.0], dtype=torch.float64)
    # gradcheck perturbs one input by 1e-6, which moves every z of its channel by ~gain x 1e-6 < 1e-4:
    # a margin of 1e-3 keeps each finite difference on one side of every kink.
    x = _kink_free_input(KINKS.get(act_name, ()), (2, 2, 3, 3), weight, bias, margin=1e-3)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    return code, (x.requires_grad_(), weight.requires_grad_(), bias.requires_grad_())


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("act_name", ["identity", "relu", "relu6", "silu", "hardswish"])
def test_gradcheck_float64(act_name, layout):
    code, inputs = _gradcheck_inputs(act_name, layout)
    x, weight, bias = (tensor.detach() for tensor in inputs)

    def output(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        # Only y: the kernel defines no gradient through its saved mean and variance outputs.
        return torch.ops.sepconv.bn_act_forward(x, weight, bias, EPS, code)[0]

    assert torch.autograd.gradcheck(output, inputs)
    _, mean, var = torch.ops.sepconv.bn_act_forward(x, weight, bias, EPS, code)
    expected_var, expected_mean = torch.var_mean(x.detach(), dim=(0, 2, 3), unbiased=False)
    # float64 statistics of 18 values: ~1e-15 relative; the default float64 tolerances (1e-7) hold.
    torch.testing.assert_close(mean, expected_mean)
    torch.testing.assert_close(var, expected_var)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("act_name", ["relu", "relu6", "hardswish"])
def test_gradcheck_float64_of_the_training_entry_point(act_name, layout):
    # bn_act_train (what batch_norm_act calls) has its own C++ autograd: check it the same way, and
    # that it updates the running statistics as BatchNorm does (momentum 0.1, unbiased variance).
    code, inputs = _gradcheck_inputs(act_name, layout)
    x, weight, bias = (tensor.detach() for tensor in inputs)

    def output(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return torch.ops.sepconv.bn_act_train(x, weight, bias, None, None, 0.1, EPS, code)

    assert torch.autograd.gradcheck(output, inputs)
    running_mean, running_var = torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64)
    torch.ops.sepconv.bn_act_train(x, weight, bias, running_mean, running_var, 0.1, EPS, code)
    var, mean = torch.var_mean(x.detach(), dim=(0, 2, 3), unbiased=True)
    # float64 throughout: ~1e-15 relative, within the default float64 tolerances.
    torch.testing.assert_close(running_mean, 0.1 * mean)
    torch.testing.assert_close(running_var, 0.9 + 0.1 * var)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("act_name", ["identity", "relu", "relu6", "silu", "hardswish"])
def test_bfloat16_input_matches_plain_batch_norm_to_bfloat16_rounding(act_name, layout):
    # As under CPU autocast: the convolution hands a bfloat16 tensor to a BatchNorm with float32 params.
    act = ACTIVATIONS[act_name]
    fused_norm = nn.BatchNorm2d(6)
    _randomize_affine(fused_norm, torch.Generator().manual_seed(1))
    plain_norm = copy.deepcopy(fused_norm)
    weight, bias = fused_norm.weight.detach(), fused_norm.bias.detach()
    # The plain path rounds z to bfloat16 before the activation (<= 2^-8 |z|); keep z 2^-8 x 8 away from
    # the kinks at +-3 and 6 so that this rounding cannot move it across one.
    x = _kink_free_input(
        KINKS_AWAY_FROM_ZERO.get(act_name, ()),
        (4, 6, 5, 5),
        weight,
        bias,
        margin=8 * 2**-8,
        transform=lambda x: (x * 2 + 0.5).bfloat16(),
    )
    z = F.batch_norm(x.float(), None, None, weight, bias, training=True, eps=EPS)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    fused_x, plain_x = x.clone().requires_grad_(), x.clone().requires_grad_()
    fused_out = batch_norm_act(fused_x, fused_norm, act)
    plain_out = _apply(act, plain_norm(plain_x))
    assert fused_out.dtype == plain_out.dtype == torch.bfloat16

    # bfloat16 keeps 8 significant bits: one rounding errs by <= 2^-8 relative, and two float32 results
    # that differ by ~1e-6 can round to neighbours one ulp (<= 2^-7 relative) apart: rtol 2^-7. The
    # plain path also rounds z to bfloat16 before the activation (<= 2^-8 |z|), which reaches y through
    # a slope <= 1.5: atol 1.5 x 2^-8 x max |z|.
    z_max = float(z.abs().max())
    torch.testing.assert_close(fused_out, plain_out, rtol=2**-7, atol=MAX_SLOPE * 2**-8 * z_max)

    # The statistics come from the same bfloat16 values, accumulated in at least float32 on both paths:
    # float32 agreement, as in the float32 test (1e-5 of the largest value).
    x_max = float(x.float().abs().max())
    torch.testing.assert_close(fused_norm.running_mean, plain_norm.running_mean, rtol=0, atol=1e-5 * x_max)
    torch.testing.assert_close(
        fused_norm.running_var,
        plain_norm.running_var,
        rtol=1e-5,
        atol=1e-5 * float(plain_norm.running_var.max()),
    )

    grad_out = torch.randn(fused_out.shape, generator=torch.Generator().manual_seed(2)).bfloat16()
    fused_out.backward(grad_out)
    plain_out.backward(grad_out)
    # g = dy * act'(z): the plain path rounds g to bfloat16 (<= 2^-8 x 1.5 |dy|) and evaluates act' at
    # the rounded z (|act''| <= 0.5, so <= 0.5 x 2^-8 |z| |dy|): |delta g| <= 2^-6 |dy| max(1, |z|).
    g_error = 2**-6 * grad_out.float().abs() * z.abs().clamp(min=1)
    x_hat = F.batch_norm(x.float(), None, None, training=True, eps=EPS)
    invstd = (torch.var(x.float(), dim=(0, 2, 3), unbiased=False) + EPS).rsqrt()
    # dx = gain (g - mean g - x_hat mean(g x_hat)): three terms, each off by <= gain max |delta g|, then
    # rounded to bfloat16 (rtol 2^-7 as above).
    gain_max = float((invstd * weight.abs()).max())
    torch.testing.assert_close(
        fused_x.grad, plain_x.grad, rtol=2**-7, atol=3 * gain_max * float(g_error.max())
    )
    # Weight and bias gradients are float32 sums over delta g (x_hat) per channel.
    torch.testing.assert_close(
        fused_norm.weight.grad,
        plain_norm.weight.grad,
        rtol=1e-5,
        atol=float((g_error * x_hat.abs()).sum(dim=(0, 2, 3)).max()),
    )
    torch.testing.assert_close(
        fused_norm.bias.grad, plain_norm.bias.grad, rtol=1e-5, atol=float(g_error.sum(dim=(0, 2, 3)).max())
    )


@pytest.mark.parametrize("act_name", ["none", "relu", "silu"])
def test_output_and_input_gradient_keep_the_memory_format(act_name):
    act = ACTIVATIONS[act_name]
    for memory_format in (torch.channels_last, torch.contiguous_format):
        x = torch.randn(2, 4, 3, 5).contiguous(memory_format=memory_format).requires_grad_()
        out = batch_norm_act(x, nn.BatchNorm2d(4), act)
        out.backward(torch.ones_like(out))
        assert out.is_contiguous(memory_format=memory_format)
        assert x.grad.is_contiguous(memory_format=memory_format)


def test_strided_channels_last_input_keeps_channels_last_like_batch_norm():
    # nn.BatchNorm2d follows x.suggest_memory_format(), which is channels_last for a channel slice of a
    # channels_last tensor; so does the kernel.
    x = torch.randn(2, 8, 3, 3).contiguous(memory_format=torch.channels_last)[:, ::2]
    assert nn.BatchNorm2d(4)(x).is_contiguous(memory_format=torch.channels_last)
    assert batch_norm_act(x, nn.BatchNorm2d(4), nn.ReLU()).is_contiguous(memory_format=torch.channels_last)


def test_one_value_per_channel_raises_like_batch_norm():
    fused_norm, plain_norm = nn.BatchNorm2d(3), nn.BatchNorm2d(3)
    x = torch.randn(1, 3, 1, 1)
    message = "Expected more than 1 value per channel when training"
    with pytest.raises((ValueError, RuntimeError), match=message):
        plain_norm(x)
    with pytest.raises((ValueError, RuntimeError), match=message):
        batch_norm_act(x, fused_norm, nn.ReLU())
    # nn.BatchNorm2d counts the batch before it checks it; the fused path does the same.
    assert fused_norm.num_batches_tracked.item() == plain_norm.num_batches_tracked.item() == 1
    assert torch.equal(fused_norm.running_mean, plain_norm.running_mean)


def test_inference_mode_and_eval_mode_use_the_plain_modules():
    # Where the kernel does not apply, batch_norm_act is literally act(norm(x)): bit-identical.
    x = torch.randn(3, 4, 5, 5)
    fused_norm, plain_norm = nn.BatchNorm2d(4), nn.BatchNorm2d(4)
    with torch.inference_mode():
        assert torch.equal(batch_norm_act(x, fused_norm, nn.SiLU()), F.silu(plain_norm(x)))
    assert torch.equal(fused_norm.running_var, plain_norm.running_var)
    fused_norm.eval(), plain_norm.eval()
    assert torch.equal(batch_norm_act(x, fused_norm, nn.ReLU6()), F.relu6(plain_norm(x)))


def test_unsupported_activation_is_a_value_error():
    with pytest.raises(ValueError, match=r"act must be one of .*ReLU6.*LeakyReLU"):
        batch_norm_act(torch.randn(2, 3, 4, 4), nn.BatchNorm2d(3), nn.LeakyReLU())


class _CustomBatchNorm(nn.BatchNorm2d):
    pass


class _NormAct(nn.Module):
    """Records what can_fuse said during the last forward (used to see it under FX tracing)."""

    def __init__(self) -> None:
        super().__init__()
        self.norm, self.act = nn.BatchNorm2d(4), nn.ReLU()
        self.decisions: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.decisions.append(can_fuse(self.norm, self.act))
        return self.act(self.norm(x))


@pytest.mark.parametrize("act", [None, nn.Identity(), nn.ReLU(), nn.ReLU6(), nn.SiLU(), nn.Hardswish()])
def test_can_fuse_batch_norm_with_supported_activations(act):
    assert can_fuse(nn.BatchNorm2d(4), act)


@pytest.mark.parametrize(
    ("norm", "act"),
    [
        (nn.SyncBatchNorm(4), nn.ReLU()),
        (_CustomBatchNorm(4), nn.ReLU()),
        (nn.BatchNorm2d(4), nn.LeakyReLU()),
        (nn.BatchNorm2d(4), nn.Hardtanh(-1.0, 1.0)),
        (nn.BatchNorm2d(4), nn.GELU()),
        (nn.GroupNorm(2, 4), nn.ReLU()),
    ],
    ids=["sync_batch_norm", "batch_norm_subclass", "leaky_relu", "hardtanh", "gelu", "group_norm"],
)
def test_cannot_fuse_other_modules(norm, act):
    assert not can_fuse(norm, act)


def test_cannot_fuse_with_hooks():
    norm, act = nn.BatchNorm2d(4), nn.ReLU()
    handle = norm.register_forward_hook(lambda module, args, output: None)
    assert not can_fuse(norm, act)
    handle.remove()
    assert can_fuse(norm, act)
    handle = act.register_forward_pre_hook(lambda module, args: None)
    assert not can_fuse(norm, act)
    handle.remove()
    handle = nn.modules.module.register_module_forward_hook(lambda module, args, output: None)
    try:
        assert not can_fuse(norm, act)
    finally:
        handle.remove()
    assert can_fuse(norm, act)


def test_cannot_fuse_while_fx_traces():
    module = _NormAct()
    graph_module = torch.fx.symbolic_trace(module)
    assert module.decisions == [False]
    assert [node.target for node in graph_module.graph.nodes if node.op == "call_module"] == ["norm", "act"]
    module(torch.randn(2, 4, 3, 3))
    assert module.decisions == [False, True]


@pytest.mark.parametrize("act_name", ["identity", "relu", "relu6", "silu", "hardswish"])
def test_a_nan_propagates_as_in_the_plain_modules(act_name):
    # A diverging run must see NaN in its loss (sepconv stops on a non-finite loss): the kernel may not
    # turn a NaN into a number where the plain modules keep it.
    act = ACTIVATIONS[act_name]
    x = torch.randn(2, 3, 4, 4).contiguous(memory_format=torch.channels_last)
    x[0, 1, 2, 2] = float("nan")
    fused = batch_norm_act(x, nn.BatchNorm2d(3), act)
    plain = nn.BatchNorm2d(3)(x)
    plain = act(plain) if act is not None else plain
    assert torch.equal(fused.isnan(), plain.isnan())
    assert fused[:, 1].isnan().all()
