"""Padding specifications for 2-D convolutions: ints, pairs, ``"valid"`` and TensorFlow's ``"same"``.

``nn.Conv2d`` refuses ``padding="same"`` for strides above 1, yet that is exactly what MobileNet-style
down-sampling layers ported from TensorFlow need. Here "same" works for every stride and dilation:
the output has ceil(input / stride) elements per axis, the odd padding pixel goes at the end.
Where the amount does not depend on the input size (stride 1) it is fixed at construction, so the
layer is an ordinary convolution; otherwise it is computed from the input shape, which tracing and
ONNX export record as constants for a fixed input size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sepconv.arithmetic import effective_kernel_size

__all__ = ["PADDING_MODES", "PaddingPlan", "pad_same", "plan_padding"]

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


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
        if stride != (1, 1):
            return PaddingPlan((0, 0), dynamic_same=True)
        totals = [effective_kernel_size(k, d) - 1 for k, d in zip(kernel_size, dilation)]
        if all(total % 2 == 0 for total in totals):
            return PaddingPlan((totals[0] // 2, totals[1] // 2))
        (total_h, total_w) = totals
        return PaddingPlan(
            (0, 0), explicit_pad=(total_w // 2, total_w - total_w // 2, total_h // 2, total_h - total_h // 2)
        )
    pair = (padding, padding) if isinstance(padding, int) else tuple(padding)
    if len(pair) != 2 or not all(isinstance(p, int) and not isinstance(p, bool) and p >= 0 for p in pair):
        raise ValueError(f"padding must be an int >= 0, a pair of them, 'valid' or 'same'; got {padding!r}")
    return PaddingPlan((pair[0], pair[1]))


def _same_amounts(size: int, kernel_size: int, stride: int, dilation: int) -> tuple[int, int]:
    # arithmetic.same_padding without its argument checks (this runs at every call).
    output_size = -(-size // stride)
    total = max((output_size - 1) * stride + (kernel_size - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def pad_same(
    x: torch.Tensor, kernel_size: list[int], stride: list[int], dilation: list[int], padding_mode: str
) -> torch.Tensor:
    """Pad the last two dims of ``x`` so that a convolution gives ceil(size / stride) outputs.

    The amounts are plain ints: tracing and export record them as constants of the traced input size
    (shape arithmetic in the exported graph is what goes wrong in ONNX's legacy exporter).
    """
    height, width = int(x.shape[-2]), int(x.shape[-1])
    top, bottom = _same_amounts(height, kernel_size[0], stride[0], dilation[0])
    left, right = _same_amounts(width, kernel_size[1], stride[1], dilation[1])
    mode = "constant" if padding_mode == "zeros" else padding_mode
    return F.pad(x, [left, right, top, bottom], mode=mode)
