"""Independent references for the layer tests: plain ``F.conv2d`` with padding worked out in the test.

The 'same' amounts are computed here from the TensorFlow formula written out again, not through
sepconv's own padding code, so a mistake there cannot hide in the reference. Also the rounding bound
of a low-precision result (:class:`Bounded`) and :func:`randomize_norms` for eval-mode comparisons.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


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


# --- bfloat16: a float64 reference on the same rounded values, and an error bound worked out -------
#
# bf16 keeps 8 significant bits (7 stored): eps = 2^-7 (torch.finfo(torch.bfloat16).eps), so rounding
# to nearest moves a value by at most U_BF16 = eps / 2 = 2^-8 of itself. A layer run in bf16 starts
# from bf16 inputs and weights; the reference runs the same operations in float64 on exactly those
# values (bf16 -> float64 is exact), so what is left is the layer's own rounding. PyTorch's CPU
# kernels for bf16 convolution and batch norm compute in float32 and round each result to bf16 once;
# a product of two bf16 values (8-bit significands) is exact in float32, and a float32 sum of n terms
# is off by at most gamma(n) = n u / (1 - n u) of the sum of their magnitudes (Higham, u = U_F32 =
# 2^-24). So each step adds U_BF16 x |result| plus a float32 term, and carries its input's error
# through |weights|. The bound is per element; a kernel that accumulated in bf16 would exceed it, and
# so would a real mistake (a shifted padding, a dropped bias, a wrong statistic), which moves outputs
# by a sizeable fraction of themselves.

U_BF16 = torch.finfo(torch.bfloat16).eps / 2  # 2^-8
U_F32 = torch.finfo(torch.float32).eps / 2  # 2^-24


def gamma(terms: int, unit_roundoff: float = U_F32) -> float:
    """Higham's gamma_n: the relative error bound of a sum of ``terms`` terms, in any order."""
    nu = terms * unit_roundoff
    return nu / (1 - nu)


class Bounded:
    """A float64 reference value, a bound of its magnitude, and a bound of a bf16 result's error.

    magnitude >= |value| element-wise (the same operations on absolute values): it scales only the
    tiny float32 terms. error >= |bf16 result - value| element-wise.
    """

    def __init__(self, value: torch.Tensor, magnitude: torch.Tensor, error: torch.Tensor) -> None:
        self.value, self.magnitude, self.error = value, magnitude, error

    @classmethod
    def exact(cls, x: torch.Tensor) -> Bounded:
        """An input already in bf16: exact, no error."""
        value = x.detach().to(torch.float64)
        return cls(value, value.abs(), torch.zeros_like(value))

    def _rounded(
        self, value: torch.Tensor, magnitude: torch.Tensor, before_rounding: torch.Tensor
    ) -> Bounded:
        # The float32 result is within before_rounding of value; rounding it to bf16 adds U_BF16 of it.
        error = before_rounding + U_BF16 * (value.abs() + before_rounding)
        return Bounded(value, magnitude, error)

    def pad(self, left: int, right: int, top: int, bottom: int) -> Bounded:
        """Zero padding: adds exact zeros."""
        return Bounded(
            *(F.pad(t, [left, right, top, bottom]) for t in (self.value, self.magnitude, self.error))
        )

    def conv(self, weight: torch.Tensor, bias: torch.Tensor | None = None, *, stride=1, groups=1) -> Bounded:
        """A convolution (no padding) with bf16 ``weight``/``bias``: K exact products and the bias summed
        in float32, then rounded to bf16; the input's error E carried as |W| * E."""
        w = weight.detach().to(torch.float64)
        b = None if bias is None else bias.detach().to(torch.float64).abs()
        value = F.conv2d(
            self.value,
            w,
            None if bias is None else bias.detach().to(torch.float64),
            stride=stride,
            groups=groups,
        )
        magnitude = F.conv2d(self.magnitude, w.abs(), b, stride=stride, groups=groups)
        reach = F.conv2d(self.magnitude + self.error, w.abs(), b, stride=stride, groups=groups)
        carried = F.conv2d(self.error, w.abs(), stride=stride, groups=groups)
        return self._rounded(value, magnitude, carried + gamma(w[0].numel() + 1) * reach)

    def batch_norm(self, norm: torch.nn.BatchNorm2d) -> Bounded:
        """Eval-mode BatchNorm, (x - mean) * s + beta with s = gamma / sqrt(var + eps), in float32: at
        most 8 float32 roundings (eps add, sqrt, divide, and the affine map however it is arranged)
        on terms of size |s| (|x| + |mean|) + |beta|, then one rounding to bf16."""
        shape = (1, -1, 1, 1)
        mean, var, weight, shift = (
            t.detach().to(torch.float64).reshape(shape)
            for t in (norm.running_mean, norm.running_var, norm.weight, norm.bias)
        )
        scale = weight / torch.sqrt(var + norm.eps)
        value = (self.value - mean) * scale + shift
        magnitude = scale.abs() * (self.magnitude + mean.abs()) + shift.abs()
        reach = scale.abs() * (self.magnitude + self.error + mean.abs()) + shift.abs()
        return self._rounded(value, magnitude, scale.abs() * self.error + gamma(8) * reach)

    def clamp(self, maximum: float | None = None) -> Bounded:
        """ReLU (``maximum`` None) or ReLU6: exact, and 1-Lipschitz, so the error does not grow."""
        value = self.value.clamp(0, maximum)
        magnitude = self.magnitude if maximum is None else self.magnitude.clamp(max=maximum)
        return Bounded(value, magnitude, self.error)

    def add(self, other: Bounded) -> Bounded:
        """A residual sum: both errors carried, then the sum rounded (float32, then bf16)."""
        reach = self.magnitude + self.error + other.magnitude + other.error
        carried = self.error + other.error
        return self._rounded(
            self.value + other.value, self.magnitude + other.magnitude, carried + gamma(1) * reach
        )

    def assert_holds(self, result: torch.Tensor) -> None:
        """Every element of the bf16 ``result`` lies within its error bound of the reference."""
        difference = (result.detach().to(torch.float64) - self.value).abs()
        excess = difference - self.error
        assert bool((excess <= 0).all()), (
            f"bf16 result off the float64 reference by up to {float(difference.max()):.3g}, over the "
            f"bound at {int((excess > 0).sum())} of {excess.numel()} elements"
        )


def randomize_norms(module: nn.Module) -> None:
    """Non-trivial running statistics and affine maps in every BatchNorm2d of ``module``, so an
    eval-mode comparison exercises the normalization too."""
    for norm in module.modules():
        if isinstance(norm, nn.BatchNorm2d):
            norm.running_mean.uniform_(-0.5, 0.5)
            norm.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(norm.weight, 0.5, 1.5)
            nn.init.uniform_(norm.bias, -0.2, 0.2)
