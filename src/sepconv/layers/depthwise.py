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
import torch.nn.functional as F
from torch.fx._symbolic_trace import is_fx_symbolic_tracing

from sepconv.arithmetic import check_positive
from sepconv.kernels.bn_act import has_hooks
from sepconv.layers.conv import _CONV_DEFAULTS, Conv2d, IntPair, PaddingArg, _describe

__all__ = ["DepthwiseConv2d", "PointwiseConv2d"]


def _training_fast_path(layer: Conv2d) -> bool:
    """Whether ``layer`` may take its training fast path at all: ``fused`` on, training, and no tracer or
    compiler watching (they must see the plain convolution; checked before any look at the input's
    shape, which a tracer cannot branch on)."""
    return (
        bool(getattr(layer, "fused", False))
        and layer.training
        and not is_fx_symbolic_tracing()
        and not torch.compiler.is_compiling()
        and not torch.jit.is_scripting()
    )


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
            _training_fast_path(self)
            and torch.is_grad_enabled()
            and self.padding_mode == "zeros"
            and not isinstance(self.padding, str)
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
            and not has_hooks(self)
        )

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this layer (weights aside), in the constructor's order."""
        config = super().get_config() | {"depth_multiplier": self.depth_multiplier}
        order = ("in_channels", "kernel_size", "stride", "padding", "dilation", "depth_multiplier", "bias")
        return {key: config[key] for key in (*order, "padding_mode")}

    def extra_repr(self) -> str:
        """The arguments ``print(layer)`` shows: ``in_channels``, then what differs from the defaults."""
        return _describe(self.get_config(), _CONV_DEFAULTS)


# Up to this many pixels per map, a channels_last pointwise convolution trains faster as a matrix product
# than through oneDNN's 1x1 convolution: measured forward + backward on the 2-core AMD EPYC (AVX2, fp32,
# MobileNetV2's shapes at 32x32 input, batch 64): 1x1 maps 2.4-2.7x, 2x2 1.5-1.6x, 4x4 1.46x, 8x8
# 1.07-1.16x; from 14x14 up it was 0.71-1.07x (16x16 with 16 input channels 0.83x), so those keep oneDNN.
_MATMUL_MAX_PIXELS = 64


class PointwiseConv2d(Conv2d):
    """A 1x1 convolution that mixes channels; ``groups`` > 1 gives ShuffleNet's grouped pointwise conv.

    In training on the CPU (``fused`` on, the default), an ungrouped pointwise convolution of a
    channels_last input with at most 64 pixels per map (8x8) runs as one matrix product over the
    pixels (``F.linear`` on the [N*H*W, C] view, whose output is channels_last as the convolution's):
    at MobileNet's late stages that trained 1.1-2.7x faster than oneDNN's 1x1 convolution. Elsewhere,
    and in eval mode, it is ``nn.Conv2d``'s own. The results agree to rounding.

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
        self.fused = True

    def _conv_forward(
        self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        if (
            _training_fast_path(self)
            and self.groups == 1
            and input.dim() == 4
            and input.device.type == "cpu"
            and input.shape[-2] * input.shape[-1] <= _MATMUL_MAX_PIXELS
            and input.is_contiguous(memory_format=torch.channels_last)
        ):
            batch, channels, height, width = input.shape
            pixels = input.permute(0, 2, 3, 1).reshape(-1, channels)  # a view: channels_last is [N*H*W, C]
            product = F.linear(pixels, weight.view(weight.shape[0], channels), bias)
            return product.view(batch, height, width, -1).permute(0, 3, 1, 2)
        output: torch.Tensor = super()._conv_forward(input, weight, bias)  # untyped in torch
        return output

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this layer (weights aside): channels, ``groups``, ``bias``."""
        config = super().get_config()
        return {key: config[key] for key in ("in_channels", "out_channels", "groups", "bias")}

    def extra_repr(self) -> str:
        """The arguments ``print(layer)`` shows: the channels, then what differs from the defaults."""
        return _describe(self.get_config(), _CONV_DEFAULTS)
