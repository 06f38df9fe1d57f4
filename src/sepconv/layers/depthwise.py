"""Depthwise and pointwise convolutions: the two halves of a depthwise-separable convolution.

Both are real ``nn.Conv2d`` subclasses (through :class:`sepconv.layers.conv.Conv2d`), so their
weights have the familiar shapes and every tool that knows ``nn.Conv2d`` keeps working:

- depthwise: ``groups = in_channels``; each input channel has its own ``depth_multiplier`` filters,
  so ``out_channels = depth_multiplier * in_channels`` and the weight is (out_channels, 1, k, k);
- pointwise: a 1x1 convolution that mixes channels (optionally grouped, as in ShuffleNet).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.fx._symbolic_trace import is_fx_symbolic_tracing

from sepconv.arithmetic import check_positive
from sepconv.layers.conv import _CONV_DEFAULTS, Conv2d, IntPair, PaddingArg, _describe

__all__ = ["DepthwiseConv2d", "PointwiseConv2d"]


class DepthwiseConv2d(Conv2d):
    """Spatial filtering of each channel on its own: ``nn.Conv2d(c, m*c, k, groups=c)``.

    In training on the CPU (``fused`` on, the default), a channels_last float32 input runs
    :func:`sepconv.kernels.depthwise_conv2d` where its C++ backward measured faster than oneDNN's;
    elsewhere, and in eval mode, the convolution is ``nn.Conv2d``'s own. The results agree to rounding.

    Args:
        in_channels: Channels of the input; each is filtered on its own.
        kernel_size: Size of each channel's filter: an int or an (height, width) pair.
        stride: Step between filter positions; at 2 the output is about half as high and wide.
        padding: An int or pair, ``"valid"`` (no padding) or ``"same"`` (the output is the input's
            size divided by the stride, rounded up, at any stride and dilation).
        dilation: Spacing between the filter's taps; widens the receptive field at no cost.
        depth_multiplier: Filters per input channel: the output has ``depth_multiplier *
            in_channels`` channels.
        bias: Whether each output channel gets a learned bias.
        padding_mode: What the border is filled with: ``"zeros"``, ``"reflect"``, ``"replicate"`` or
            ``"circular"``.
        device: Where the parameters are created.
        dtype: The parameters' floating-point type.

    >>> layer = DepthwiseConv2d(3, kernel_size=3, depth_multiplier=2)
    >>> layer.out_channels, tuple(layer.weight.shape)
    (6, (6, 1, 3, 3))
    """

    def __init__(
        self,
        in_channels: int,
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
        in_channels = check_positive("in_channels", in_channels)
        depth_multiplier = check_positive("depth_multiplier", depth_multiplier)
        super().__init__(
            in_channels,
            in_channels * depth_multiplier,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=in_channels,
            bias=bias,
            padding_mode=padding_mode,
            device=device,
            dtype=dtype,
        )
        self.depth_multiplier = depth_multiplier
        self.fused = True

    def _conv_forward(
        self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        if (
            self.fused
            and self.training
            and torch.is_grad_enabled()
            and self.padding_mode == "zeros"
            and not isinstance(self.padding, str)
            and not is_fx_symbolic_tracing()
            and not torch.compiler.is_compiling()
        ):
            from sepconv.kernels.depthwise import depthwise_conv2d

            return depthwise_conv2d(input, weight, bias, self.stride, self.padding, self.dilation)
        output: torch.Tensor = super()._conv_forward(input, weight, bias)  # untyped in torch
        return output

    def fuses_with_norm(self) -> bool:
        """True when a block may run this layer together with the BatchNorm and activation after it
        (:func:`sepconv.kernels.depthwise_batch_norm_act`): ``fused`` on, zero padding given as numbers,
        no bias (the BatchNorm after it would cancel one), depth multiplier 1, and no hook on the layer
        (the fused kernel never calls it, so a hook would not run)."""
        return (
            self.fused
            and self.padding_mode == "zeros"
            and not isinstance(self.padding, str)
            and self.bias is None
            and self.depth_multiplier == 1
            and not (
                self._forward_hooks
                or self._forward_pre_hooks
                or self._backward_hooks
                or self._backward_pre_hooks
            )
        )

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this layer (weights aside), in the constructor's order."""
        config = super().get_config() | {"depth_multiplier": self.depth_multiplier}
        order = ("in_channels", "kernel_size", "stride", "padding", "dilation", "depth_multiplier", "bias")
        return {key: config[key] for key in (*order, "padding_mode")}

    def extra_repr(self) -> str:
        """The arguments ``print(layer)`` shows: ``in_channels``, then what differs from the defaults."""
        return _describe(self.get_config(), _CONV_DEFAULTS)


class PointwiseConv2d(Conv2d):
    """A 1x1 convolution that mixes channels; ``groups`` > 1 gives ShuffleNet's grouped pointwise conv.

    Args:
        in_channels: Channels of the input.
        out_channels: Channels of the output; each is a weighted sum of the input channels.
        groups: Split the channels into this many groups, each mixed only within itself (divides both
            channel counts).
        bias: Whether each output channel gets a learned bias.
        device: Where the parameters are created.
        dtype: The parameters' floating-point type.

    >>> PointwiseConv2d(3, 10)(torch.zeros(1, 3, 5, 5)).shape
    torch.Size([1, 10, 5, 5])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        groups: int = 1,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(in_channels, out_channels, 1, groups=groups, bias=bias, device=device, dtype=dtype)

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this layer (weights aside): channels, ``groups``, ``bias``."""
        config = super().get_config()
        return {key: config[key] for key in ("in_channels", "out_channels", "groups", "bias")}

    def extra_repr(self) -> str:
        """The arguments ``print(layer)`` shows: the channels, then what differs from the defaults."""
        return _describe(self.get_config(), _CONV_DEFAULTS)
