"""``depthwise_conv2d``: a CPU depthwise convolution for channels_last training, exact against ``F.conv2d``.

The operators are C++ (``csrc/depthwise.cpp``, registered with ``torch.library``):
``torch.ops.sepconv.depthwise_backward`` (grad_input and grad_weight in one pass), and two forwards that
share it, ``depthwise_forward`` (hand-written) and ``depthwise_forward_onednn`` (``at::conv2d``, used by
default in float32, see ``_FORWARD_OPERATOR``). This module gives them autograd and a fake (meta) implementation
for ``torch.compile`` / ``torch.export``, and falls back to ``F.conv2d(..., groups=C)`` wherever the
kernels do not apply (GPU, other dtypes, a contiguous NCHW input, a depth multiplier above 1, no
compiler), so callers never need to check.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sepconv.kernels._build import loaded_with
from sepconv.kernels.bn_act import (
    ACTIVATION_CODES,
    activation_code,
    batch_norm_act,
    can_fuse,
    training_arguments,
)

__all__ = [
    "FORWARD_OPERATORS",
    "depthwise_batch_norm_act",
    "depthwise_conv2d",
    "depthwise_kernel_applies",
    "depthwise_kernel_pays",
    "depthwise_kernels_available",
    "fused_depthwise_norm_applies",
    "fused_depthwise_norm_pays",
    "run_fused_depthwise_norm",
]

_KERNEL_DTYPES = (torch.float32, torch.float64)


def depthwise_kernels_available() -> bool:
    """True when the depthwise C++ kernels are built and loaded (building them on first call)."""
    return loaded_with(_register_python_parts)


# The forward operator depthwise_conv2d runs, by dtype; both share the C++ backward. In float32 oneDNN's
# forward ("depthwise_forward_onednn", at::conv2d) matched or beat the C++ one ("depthwise_forward") at
# the MobileNet shapes measured on the 2-core AMD EPYC (C++ at 0.6-1.1x of it), while the C++ backward
# beat oneDNN's (up to 2x at stride 1). oneDNN has no float64 kernels (at::conv2d then takes a slow
# generic path), so float64 runs the C++ forward, as does bfloat16 (which keeps a float32 weight in float32).
#: The two forward implementations of the depthwise kernel: its own C++ one and oneDNN's.
FORWARD_OPERATORS = ("depthwise_forward", "depthwise_forward_onednn")
_FORWARD_OPERATOR = {
    torch.float32: "depthwise_forward_onednn",
    torch.float64: "depthwise_forward",
    torch.bfloat16: "depthwise_forward",  # bf16 storage, float32 sums and weight
}


def _register_python_parts() -> None:
    # Autograd and fake tensors for the C++ operators; registered once, after the library is loaded.
    def forward_fake(
        input: torch.Tensor,
        weight: torch.Tensor,
        stride: Sequence[int],
        padding: Sequence[int],
        dilation: Sequence[int],
    ) -> torch.Tensor:
        batch, channels, height, width = input.shape
        out_height = (height + 2 * padding[0] - dilation[0] * (weight.shape[2] - 1) - 1) // stride[0] + 1
        out_width = (width + 2 * padding[1] - dilation[1] * (weight.shape[3] - 1) - 1) // stride[1] + 1
        return input.new_empty((batch, channels, out_height, out_width)).contiguous(
            memory_format=torch.channels_last
        )

    def _backward_fake(
        grad_output: torch.Tensor,
        input: torch.Tensor,
        weight: torch.Tensor,
        stride: Sequence[int],
        padding: Sequence[int],
        dilation: Sequence[int],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.empty_like(input, memory_format=torch.channels_last), torch.empty_like(weight)

    torch.library.register_fake("sepconv::depthwise_backward", _backward_fake)

    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        input, weight, stride, padding, dilation = inputs
        ctx.save_for_backward(input, weight)
        ctx.geometry = (stride, padding, dilation)

    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[Any, ...]:
        input, weight = ctx.saved_tensors
        grad_input, grad_weight = torch.ops.sepconv.depthwise_backward(
            grad_output, input, weight, *ctx.geometry
        )
        return grad_input, grad_weight, None, None, None

    for name in FORWARD_OPERATORS:
        torch.library.register_fake(f"sepconv::{name}", forward_fake)
        torch.library.register_autograd(f"sepconv::{name}", backward, setup_context=setup_context)


def _pair(value: int | tuple[int, ...] | list[int], name: str) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    if len(value) == 2 and all(isinstance(v, int) for v in value):
        return int(value[0]), int(value[1])
    raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")


def _kernel_dtypes_fit(x: torch.Tensor, weight: torch.Tensor) -> bool:
    # float32 / float64 with a weight of the same dtype, or bfloat16 activations (autocast hands them on)
    # with a float32 or bfloat16 weight, summed in float32.
    if x.dtype == torch.bfloat16:
        return weight.dtype in (torch.float32, torch.bfloat16)
    return x.dtype in _KERNEL_DTYPES and weight.dtype == x.dtype


def depthwise_kernel_applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """True when the C++ kernels can compute the depthwise convolution of ``x`` with ``weight``.

    It needs a 4-D channels_last CPU input (a 1x1 map counts, whose bytes are the same in both layouts)
    in float32 or float64 with a ``[C, 1, kh, kw]`` weight of the same dtype (depth multiplier 1), or in
    bfloat16 with a float32 or bfloat16 weight (what a layer under bf16 autocast hands on: stored as
    bfloat16, summed in float32), and the kernels built.
    """
    return _kernel_dtypes_fit(x, weight) and _kernel_layout_fits(x, weight)


def _kernel_layout_fits(x: torch.Tensor, weight: torch.Tensor) -> bool:
    # Everything depthwise_kernel_applies asks but the dtypes.
    return (
        x.dim() == 4
        and x.device.type == "cpu"
        and weight.device.type == "cpu"
        and weight.dim() == 4
        and weight.shape[0] == x.shape[1]
        and weight.shape[1] == 1
        and x.numel() > 0
        and x.is_contiguous(memory_format=torch.channels_last)
        # A tensor that is both (C == 1, or a 1x1 map) is NCHW to its producer, but a 1x1 map has the
        # same bytes in both layouts, and there PyTorch's backward takes a slow path (28 ms against
        # 0.4 ms at 64x960@1x1, MobileNetV2's last stages on 32x32 images)
        and (not x.is_contiguous() or x.shape[-2:] == (1, 1))
        and not torch.jit.is_scripting()
        and depthwise_kernels_available()
    )


# Where the C++ backward beat PyTorch's (measured for issue 9 on the 2-core AMD EPYC, quiet, 2 threads,
# channels_last fp32): on maps of 4x4 or smaller PyTorch takes a slow path (16.8 ms against 0.35 ms at
# 64x960@1x1, 10.1 against 0.40 at 64x384@2x2: 25-48x; these are MobileNetV2's last stages on 32x32
# images); at stride 1 on maps of 14x14 or more, 1.0-1.5x. In between (7x7, 8x8 at stride 1, 16x16 at
# stride 2) oneDNN was as fast or faster (C++ at 0.68-0.98x), so those keep F.conv2d.
_FASTER_STRIDE = (1, 1)
_FASTER_MIN_SIZE = 14
_SLOW_PATH_MAX_SIZE = 4


def depthwise_kernel_pays(x: torch.Tensor, stride: tuple[int, int]) -> bool:
    """True for the shapes where the C++ depthwise backward measured faster than PyTorch's."""
    smallest = min(x.shape[-2:])
    return smallest <= _SLOW_PATH_MAX_SIZE or (stride == _FASTER_STRIDE and smallest >= _FASTER_MIN_SIZE)


def depthwise_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, stride, padding, dilation, groups=C)`` with zero padding.

    Runs the C++ kernels when they apply (:func:`depthwise_kernel_applies`) and pay
    (:func:`depthwise_kernel_pays`): in float32 oneDNN's forward with the C++ backward. Elsewhere it is
    ``F.conv2d`` itself; the results agree to rounding, and the output's memory format is the one
    ``F.conv2d`` gives. ``padding`` is explicit (ints); resolve ``"same"`` before calling.
    """
    stride_pair = _pair(stride, "stride")
    padding_pair = _pair(padding, "padding")
    dilation_pair = _pair(dilation, "dilation")
    if not (depthwise_kernel_applies(x, weight) and depthwise_kernel_pays(x, stride_pair)):
        return F.conv2d(x, weight, bias, stride_pair, padding_pair, dilation_pair, groups=x.shape[-3])
    forward = getattr(torch.ops.sepconv, _FORWARD_OPERATOR[x.dtype])
    out: torch.Tensor = forward(x, weight, stride_pair, padding_pair, dilation_pair)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1).to(out.dtype)  # a bfloat16 output stays bfloat16, as F.conv2d's
    return out


def _register_fused_parts() -> None:
    # Fake tensors for the fused depthwise + BatchNorm + activation operators (csrc/dw_bn_act.cpp),
    # whose autograd is C++; registered once, after the library is loaded.
    def forward_fake(
        input: torch.Tensor,
        weight: torch.Tensor,
        bn_weight: torch.Tensor,
        bn_bias: torch.Tensor,
        stride: Sequence[int],
        padding: Sequence[int],
        dilation: Sequence[int],
        eps: float,
        act: int,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        batch, channels, height, width = input.shape
        out_height = (height + 2 * padding[0] - dilation[0] * (weight.shape[2] - 1) - 1) // stride[0] + 1
        out_width = (width + 2 * padding[1] - dilation[1] * (weight.shape[3] - 1) - 1) // stride[1] + 1
        shape = (batch, channels, out_height, out_width)
        output = input.new_empty(shape).contiguous(memory_format=torch.channels_last)
        # the statistics in the arithmetic type: float for bfloat16 activations
        stat_dtype = torch.float32 if input.dtype == torch.bfloat16 else input.dtype
        return (
            output,
            torch.empty_like(output),
            input.new_empty(channels, dtype=stat_dtype),
            input.new_empty(channels, dtype=stat_dtype),
        )

    def backward_fake(
        grad_output: torch.Tensor,
        input: torch.Tensor,
        weight: torch.Tensor,
        z: torch.Tensor,
        bn_weight: torch.Tensor,
        *rest: Any,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return (
            torch.empty_like(input, memory_format=torch.channels_last),
            torch.empty_like(weight),
            torch.empty_like(bn_weight),
            torch.empty_like(bn_weight),
        )

    torch.library.register_fake("sepconv::dw_bn_act_forward", forward_fake)
    torch.library.register_fake("sepconv::dw_bn_act_backward", backward_fake)


# Where the fused operator beat the depthwise convolution followed by BatchNorm + activation (ConvNormAct,
# ReLU6, forward + backward, channels_last fp32, 2-core AMD EPYC AVX2): where the depthwise kernel pays
# (stride 1 on 14x14 or more: 1.03-1.23x; maps of 4x4 or less: 1.0-14.6x, PyTorch's slow path), and at
# stride 2 at every size measured, 112x112 down to 4x4 (1.09-1.25x, 0.99x at 4x4); not at stride 1 on
# 8x8 (0.91x at 64x144@8x8), where oneDNN's forward is faster than the kernel's own.
_FUSED_STRIDE = (2, 2)


def fused_depthwise_norm_pays(x: torch.Tensor, stride: tuple[int, int]) -> bool:
    """True for the shapes where the fused depthwise + BatchNorm + activation measured faster than the
    separate operators: where :func:`depthwise_kernel_pays`, and at stride 2."""
    return stride == _FUSED_STRIDE or depthwise_kernel_pays(x, stride)


def fused_depthwise_norm_applies(
    x: torch.Tensor, weight: torch.Tensor, stride: tuple[int, int], norm: nn.Module, act: nn.Module | None
) -> bool:
    """True when :func:`depthwise_batch_norm_act` runs its one fused kernel for these arguments.

    The rule: the depthwise kernel applies (:func:`depthwise_kernel_applies`: a channels_last CPU input
    with a ``[C, 1, kh, kw]`` weight, float32/float64, or bfloat16 activations with a float32 or
    bfloat16 weight, as bf16 autocast hands them on); the fused operator pays at this shape
    (:func:`fused_depthwise_norm_pays`: stride 2, or where :func:`depthwise_kernel_pays`); and
    ``act(norm(.))`` may fuse (:func:`sepconv.kernels.can_fuse`, ``norm`` in training mode, not under
    inference mode).
    """
    return (
        can_fuse(norm, act)
        and norm.training
        and not torch.is_inference_mode_enabled()
        and depthwise_kernel_applies(x, weight)
        and fused_depthwise_norm_pays(x, stride)
        and loaded_with(_register_fused_parts)
    )


def depthwise_batch_norm_act(
    x: torch.Tensor,
    weight: torch.Tensor,
    stride: int | tuple[int, int],
    padding: int | tuple[int, int],
    dilation: int | tuple[int, int],
    norm: nn.Module,
    act: nn.Module | None,
) -> torch.Tensor:
    """``act(norm(F.conv2d(x, weight, None, stride, padding, dilation, groups=C)))`` for a training ``norm``.

    Where :func:`fused_depthwise_norm_applies` holds, one C++ operator does it in four passes over
    memory forward (the batch statistics are summed while each output row is in cache) and six
    backward (the gradient of the convolution's output never goes to memory), against five and eight
    for the three operators; it updates ``norm``'s running statistics as ``norm(...)`` would. Elsewhere
    it is :func:`depthwise_conv2d`, then :func:`sepconv.kernels.batch_norm_act`. The results agree to
    float rounding.

    Under bf16 autocast the operator is not autocast: it computes in the dtype it is given. A bfloat16
    input (what a bf16 layer before it hands on) is read, and the output, the convolution's output it
    keeps for the backward, and grad_input are written, as bfloat16: half the bytes of float32. Every
    sum runs in float32 and the statistics and parameters stay float32; the convolution's output is
    rounded to bfloat16 before the statistics are taken, as the separate bf16 operators would see it.
    A float32 input is computed in float32.
    """
    stride_pair = _pair(stride, "stride")
    padding_pair = _pair(padding, "padding")
    dilation_pair = _pair(dilation, "dilation")
    if isinstance(norm, nn.BatchNorm2d) and fused_depthwise_norm_applies(x, weight, stride_pair, norm, act):
        return run_fused_depthwise_norm(x, weight, stride_pair, padding_pair, dilation_pair, norm, act)
    convolved = depthwise_conv2d(x, weight, None, stride_pair, padding_pair, dilation_pair)
    if can_fuse(norm, act):
        return batch_norm_act(convolved, norm, act)
    normalized: torch.Tensor = norm(convolved)
    return normalized if act is None else act(normalized)


def run_fused_depthwise_norm(
    x: torch.Tensor,
    weight: torch.Tensor,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    norm: nn.BatchNorm2d,
    act: nn.Module | None,
) -> torch.Tensor:
    """The fused operator of :func:`depthwise_batch_norm_act` itself, for a caller that has checked
    :func:`fused_depthwise_norm_applies` (a block, once per call, rather than twice)."""
    code = activation_code(act)
    if code is None:
        raise ValueError(f"act must be one of {[c.__name__ for c in ACTIVATION_CODES]}, got {act!r}")
    output: torch.Tensor = torch.ops.sepconv.dw_bn_act_train(
        x, weight, *training_arguments(norm, x, weight.shape[0]), code, stride, padding, dilation
    )
    return output
