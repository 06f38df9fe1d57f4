"""Padding specifications for 2-D convolutions: ints, pairs, ``"valid"`` and TensorFlow's ``"same"``.

``nn.Conv2d`` refuses ``padding="same"`` for strides above 1, yet that is exactly what MobileNet-style
down-sampling layers ported from TensorFlow need. Here "same" works for every stride and dilation:
the output has ceil(input / stride) elements per axis, the odd padding pixel goes at the end.
Where the amount does not depend on the input size (stride 1, or a kernel one pixel wide) it is fixed
at construction, so the layer is an ordinary convolution; otherwise :func:`pad_same` computes it from
the input shape with arithmetic that every capture mechanism records as arithmetic on the shape, not as
constants of the example input: plain ints in eager mode, symbolic ints under ``torch.export`` /
``torch.compile`` / ONNX's dynamo exporter, and shape tensors under ``torch.jit.trace`` (ONNX's legacy
exporter). So an exported model pads correctly at every input size its dynamic axes allow.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Literal, TypeGuard

import torch
import torch.nn.functional as F

from sepconv.arithmetic import effective_kernel_size
from sepconv.errors import ArgumentTypeError

__all__ = ["PADDING_MODES", "PaddingMode", "PaddingPlan", "is_padding_mode", "pad_same", "plan_padding"]

#: How the border is filled: with zeros, a reflection, the edge value repeated, or circularly.
PaddingMode = Literal["zeros", "reflect", "replicate", "circular"]
#: Every :data:`PaddingMode`, in ``nn.Conv2d``'s order.
PADDING_MODES: tuple[PaddingMode, ...] = ("zeros", "reflect", "replicate", "circular")


def is_padding_mode(value: object) -> TypeGuard[PaddingMode]:
    """Whether ``value`` is one of :data:`PADDING_MODES` (so ``nn.Conv2d`` accepts it as ``padding_mode``)."""
    return isinstance(value, str) and value in PADDING_MODES


# A dimension as the capture mechanism sees it: int (eager), SymInt (export, compile), 0-dim tensor (jit.trace).
ShapeValue = int | torch.SymInt | torch.Tensor


@dataclass(frozen=True)
class PaddingPlan:
    """How a convolution realises its padding argument.

    conv_padding: the symmetric padding handed to the convolution itself; explicit_pad: a fixed
    ``F.pad`` amount (left, right, top, bottom) applied before it, for asymmetric 'same' padding;
    dynamic_same: the amount depends on the input size and is computed at every call.
    """

    conv_padding: tuple[int, int]
    explicit_pad: tuple[int, int, int, int] | None = None
    dynamic_same: bool = False


def plan_padding(
    padding: int | tuple[int, int] | str,
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
) -> PaddingPlan:
    """Validate a padding argument and decide how to apply it (see :class:`PaddingPlan`)."""
    if isinstance(padding, str):
        if padding == "valid":
            return PaddingPlan((0, 0))
        if padding != "same":
            raise ValueError(
                f"padding must be an int >= 0, a pair of them, 'valid' or 'same'; got {padding!r}"
            )
        extents = [effective_kernel_size(k, d) for k, d in zip(kernel_size, dilation)]
        # The total is extent - 1 at stride 1 and 0 for a one-pixel kernel, whatever the input size.
        if any(s != 1 and extent != 1 for s, extent in zip(stride, extents)):
            return PaddingPlan((0, 0), dynamic_same=True)
        totals = [extent - 1 if s == 1 else 0 for s, extent in zip(stride, extents)]
        if all(total % 2 == 0 for total in totals):
            return PaddingPlan((totals[0] // 2, totals[1] // 2))
        (total_h, total_w) = totals
        return PaddingPlan(
            (0, 0), explicit_pad=(total_w // 2, total_w - total_w // 2, total_h // 2, total_h - total_h // 2)
        )
    message = f"padding must be an int >= 0, a pair of them, 'valid' or 'same'; got {padding!r}"
    if isinstance(padding, tuple | list):
        if len(padding) != 2:
            raise ValueError(message)
        pair = tuple(padding)
    else:
        pair = (padding, padding)
    if any(isinstance(p, bool) or not isinstance(p, numbers.Integral) for p in pair):
        raise ArgumentTypeError(message)
    if any(p < 0 for p in pair):
        raise ValueError(message)
    return PaddingPlan((int(pair[0]), int(pair[1])))


def _same_amounts(
    size: ShapeValue, kernel_size: int, stride: int, dilation: int
) -> tuple[ShapeValue, ShapeValue]:
    # arithmetic.same_padding in a form that stays arithmetic on `size` (an int, a SymInt, or a 0-dim
    # tensor under torch.jit.trace): with n = size, e = extent and s = stride, the TF total
    # max((ceil(n/s) - 1)*s + e - n, 0) equals max(e - 1 - (n - 1) % s, 0). The max is only needed
    # when e < s; left out otherwise, it keeps torch.export's symbolic shapes simple enough to verify.
    extent = (kernel_size - 1) * dilation + 1
    total = extent - 1 - (size - 1) % stride
    if extent < stride:
        if isinstance(total, int):
            total = max(total, 0)
        elif isinstance(total, torch.Tensor):
            total = torch.clamp(total, min=0)
        else:
            total = torch.sym_max(total, 0)
    return total // 2, total - total // 2


def pad_same(
    x: torch.Tensor, kernel_size: list[int], stride: list[int], dilation: list[int], padding_mode: str
) -> torch.Tensor:
    """Pad the last two dims of ``x`` so that a convolution gives ceil(size / stride) outputs.

    The amounts are computed from ``x.shape`` without converting it to Python ints, so tracing and
    export (``torch.export``, ``torch.onnx.export`` with either exporter) keep them as functions of the
    input size and a graph exported with dynamic height and width pads correctly at every size.
    """
    top, bottom = _same_amounts(x.shape[-2], kernel_size[0], stride[0], dilation[0])
    left, right = _same_amounts(x.shape[-1], kernel_size[1], stride[1], dilation[1])
    mode = "constant" if padding_mode == "zeros" else padding_mode
    # under capture the amounts are SymInts or 0-dim tensors, which F.pad takes though its stub says int
    return F.pad(x, [left, right, top, bottom], mode=mode)  # type: ignore[list-item]
