"""Independent references for the layer tests: plain ``F.conv2d`` with padding worked out in the test.

The 'same' amounts are computed here from the TensorFlow formula written out again, not through
sepconv's own padding code, so a mistake there cannot hide in the reference.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def tf_same_pad(size: int, kernel_size: int, stride: int, dilation: int) -> tuple[int, int]:
    total = max((math.ceil(size / stride) - 1) * stride + (kernel_size - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def reference_conv(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: tuple[int, int],
    padding,
    dilation: tuple[int, int],
    groups: int,
    padding_mode: str = "zeros",
) -> torch.Tensor:
    """A 2-D convolution by F.conv2d, with every padding applied explicitly by F.pad first."""
    kernel_h, kernel_w = weight.shape[-2:]
    if padding == "same":
        top, bottom = tf_same_pad(x.shape[-2], kernel_h, stride[0], dilation[0])
        left, right = tf_same_pad(x.shape[-1], kernel_w, stride[1], dilation[1])
    elif padding == "valid":
        top = bottom = left = right = 0
    else:
        pad_h, pad_w = (padding, padding) if isinstance(padding, int) else padding
        top = bottom = pad_h
        left = right = pad_w
    mode = "constant" if padding_mode == "zeros" else padding_mode
    padded = F.pad(x, [left, right, top, bottom], mode=mode)
    return F.conv2d(padded, weight, bias, stride=stride, padding=0, dilation=dilation, groups=groups)
