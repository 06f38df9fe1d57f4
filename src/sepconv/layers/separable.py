"""Depthwise-separable convolution: a depthwise convolution, then a pointwise one, nothing between.

These are Keras ``SeparableConv2D`` semantics: no normalization or activation between the two steps
(the MobileNet block, with them, is :class:`sepconv.layers.blocks.DepthwiseSeparableBlock`), and the
bias sits on the pointwise step only, since a depthwise bias would be absorbed by it anyway.

Cost against a standard k x k convolution from C_in to C_out channels (depth multiplier 1):
parameters k*k*C_in + C_in*C_out instead of k*k*C_in*C_out, i.e. a ratio of 1/C_out + 1/k^2.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sepconv.arithmetic import check_positive
from sepconv.layers.conv import _CONV_DEFAULTS, IntPair, PaddingArg, _describe, check_bias
from sepconv.layers.depthwise import DepthwiseConv2d, PointwiseConv2d

__all__ = ["SeparableConv2d"]


class SeparableConv2d(nn.Module):
    """Depthwise k x k convolution (``.depthwise``) followed by a 1x1 convolution (``.pointwise``).

    Costs about 1/out_channels + 1/k^2 of a standard k x k convolution's parameters and MACs (the
    module's docstring works it out).

    Args:
        in_channels: Channels of the input.
        out_channels: Channels of the output, mixed by the pointwise step.
        kernel_size: The depthwise filter's size: an int or an (height, width) pair.
        stride: The depthwise step's stride; at 2 the output is about half as high and wide.
        padding: An int or pair, ``"valid"`` or ``"same"`` (any stride and dilation).
        dilation: Spacing between the depthwise filter's taps.
        depth_multiplier: Depthwise filters per input channel (the channels between the two steps are
            ``depth_multiplier * in_channels``).
        bias: Whether the pointwise step has a bias (the depthwise step never has one).
        padding_mode: What the border is filled with, as in ``nn.Conv2d``.
        device: Where the parameters are created.
        dtype: The parameters' floating-point type.

    >>> layer = SeparableConv2d(16, 32, 3, bias=False)
    >>> sum(p.numel() for p in layer.parameters())  # 16*3*3 + 16*32
    656
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        stride: IntPair = 1,
        padding: PaddingArg = 0,
        dilation: IntPair = 1,
        depth_multiplier: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        out_channels = check_positive("out_channels", out_channels)
        bias = check_bias(bias)
        self.depthwise = DepthwiseConv2d(
            in_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            depth_multiplier=depth_multiplier,
            bias=False,
            padding_mode=padding_mode,
            device=device,
            dtype=dtype,
        )
        self.pointwise = PointwiseConv2d(
            self.depthwise.out_channels, out_channels, bias=bias, device=device, dtype=dtype
        )

    @property
    def in_channels(self) -> int:
        """Channels of the input (the depthwise step's ``in_channels``)."""
        return self.depthwise.in_channels

    @property
    def out_channels(self) -> int:
        """Channels of the output (the pointwise step's ``out_channels``)."""
        return self.pointwise.out_channels

    @property
    def kernel_size(self) -> tuple[int, int]:
        """The depthwise step's (height, width) kernel; the pointwise step is 1x1."""
        return self.depthwise.kernel_size

    @property
    def stride(self) -> tuple[int, int]:
        """The depthwise step's (height, width) stride; the pointwise step keeps the size."""
        return self.depthwise.stride

    @property
    def dilation(self) -> tuple[int, int]:
        """The depthwise step's (height, width) dilation."""
        return self.depthwise.dilation

    @property
    def depth_multiplier(self) -> int:
        """Output channels of the depthwise step per input channel."""
        return self.depthwise.depth_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the depthwise step, then the pointwise step, on ``x`` (N, C_in, H, W)."""
        output: torch.Tensor = self.pointwise(self.depthwise(x))
        return output

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this layer (weights aside)."""
        config = self.depthwise.get_config()
        del config["bias"]
        config["out_channels"] = self.out_channels
        config["bias"] = self.pointwise.bias is not None
        return config

    def extra_repr(self) -> str:
        """The arguments ``print(layer)`` shows: the channels, then what differs from the defaults."""
        return _describe(self.get_config(), _CONV_DEFAULTS)
