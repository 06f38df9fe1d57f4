"""The building blocks of MobileNets: conv-norm-activation, the V1 separable block, the V2 inverted residual.

Activations and normalizations are arguments (``act_layer``, ``norm_layer``), not hard-coded, and
each block uses :class:`DepthwiseConv2d` / :class:`PointwiseConv2d` where it means them, so analysis
and conversion tools can recognise the depthwise and pointwise steps by type.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import nn

from sepconv.arithmetic import check_positive
from sepconv.errors import ArgumentTypeError
from sepconv.kernels.bn_act import batch_norm_act, can_fuse
from sepconv.kernels.depthwise import fused_depthwise_norm_applies, run_fused_depthwise_norm
from sepconv.layers.conv import Conv2d, IntPair, PaddingArg, to_pair
from sepconv.layers.depthwise import DepthwiseConv2d, PointwiseConv2d
from sepconv.layers.factory import ActLayer, NormLayer, make_act, make_norm

__all__ = ["ConvNormAct", "DepthwiseSeparableBlock", "InvertedResidual", "conv_layer"]


def conv_layer(
    in_channels: int,
    out_channels: int,
    kernel_size: IntPair,
    stride: IntPair = 1,
    padding: PaddingArg = 0,
    dilation: IntPair = 1,
    groups: int = 1,
    bias: bool = True,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Conv2d:
    """The most specific convolution class for these arguments: depthwise, pointwise or general."""
    in_channels = check_positive("in_channels", in_channels)
    out_channels = check_positive("out_channels", out_channels)
    groups = check_positive("groups", groups)
    is_one_by_one = to_pair("kernel_size", kernel_size) == (1, 1) and to_pair("stride", stride) == (1, 1)
    if is_one_by_one and _is_zero_padding(padding):
        return PointwiseConv2d(
            in_channels, out_channels, groups=groups, bias=bias, device=device, dtype=dtype
        )
    if groups == in_channels and groups > 1 and out_channels % in_channels == 0:
        return DepthwiseConv2d(
            in_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            depth_multiplier=out_channels // in_channels,
            bias=bias,
            device=device,
            dtype=dtype,
        )
    return Conv2d(
        in_channels,
        out_channels,
        kernel_size,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        bias=bias,
        device=device,
        dtype=dtype,
    )


def _is_zero_padding(padding: PaddingArg) -> bool:
    """Whether ``padding`` adds nothing to a 1x1 stride-1 convolution (numpy integers included)."""
    if isinstance(padding, str):
        return padding in ("valid", "same")
    pair = tuple(padding) if isinstance(padding, tuple | list) else (padding, padding)
    return len(pair) == 2 and all(
        isinstance(p, numbers.Integral) and not isinstance(p, bool) and p == 0 for p in pair
    )


class ConvNormAct(nn.Sequential):
    """Convolution, then normalization, then activation; children ``0``, ``1``, ``2`` (those present).

    The layout (and so the ``state_dict`` keys) matches torchvision's ``Conv2dNormActivation``.
    ``padding=None`` keeps the spatial size at stride 1: (kernel_size - 1) // 2 * dilation.
    The convolution has a bias only when there is no normalization, unless ``bias`` says otherwise.

    In training, a BatchNorm + activation pair runs as one fused kernel (:mod:`sepconv.kernels`) when
    ``fused`` is True (the default) and the kernel applies, and after a depthwise convolution the three
    run as one (:func:`sepconv.kernels.depthwise_batch_norm_act`, where its rule holds); otherwise, and
    in eval mode, the children run one by one. The results agree to float rounding either way.

    Args:
        in_channels: Channels of the input.
        out_channels: Channels of the output.
        kernel_size: The convolution's kernel: an int or an (height, width) pair.
        stride: The convolution's stride.
        padding: As in :class:`Conv2d`; None keeps the size at stride 1.
        dilation: Spacing between the kernel's taps.
        groups: Channel groups of the convolution (``groups=in_channels`` makes it depthwise).
        norm_layer: A name from ``NORMALIZATIONS``, a callable taking the channels, or None.
        act_layer: A name from ``ACTIVATIONS``, a class or callable, or None.
        bias: Whether the convolution has a bias; None: only when there is no normalization.
        device: Where the parameters are created.
        dtype: The parameters' floating-point type.
    """

    fused: bool

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair = 3,
        stride: IntPair = 1,
        padding: PaddingArg | None = None,
        dilation: IntPair = 1,
        groups: int = 1,
        norm_layer: NormLayer = "batchnorm",
        act_layer: ActLayer = "relu",
        bias: bool | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        in_channels = check_positive("in_channels", in_channels)
        out_channels = check_positive("out_channels", out_channels)
        kernel_pair = to_pair("kernel_size", kernel_size)
        dilation_pair = to_pair("dilation", dilation)
        if padding is None:
            padding = (
                (kernel_pair[0] - 1) // 2 * dilation_pair[0],
                (kernel_pair[1] - 1) // 2 * dilation_pair[1],
            )
        if bias is None:
            bias = norm_layer is None
        layers: list[nn.Module] = [
            conv_layer(
                in_channels,
                out_channels,
                kernel_pair,
                stride=stride,
                padding=padding,
                dilation=dilation_pair,
                groups=groups,
                bias=bias,
                device=device,
                dtype=dtype,
            )
        ]
        norm = make_norm(norm_layer, out_channels)
        if norm is not None:
            layers.append(norm.to(device=device, dtype=dtype))
        act = make_act(act_layer)
        if act is not None:
            layers.append(act)
        super().__init__(*layers)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.fused = True

    def norm_act_pair(self) -> tuple[nn.Module, nn.Module | None] | None:
        """The (normalization, activation) children after the convolution, if the layout has them."""
        if len(self) == 3:
            return self[1], self[2]
        if len(self) == 2:
            return self[1], None
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Convolution, normalization, activation on ``x``; in training, fused in one kernel where it can."""
        if self.fused and self.training:
            pair = self.norm_act_pair()
            if pair is not None:
                norm, act = pair
                if can_fuse(norm, act):
                    conv = self[0]
                    if (
                        isinstance(conv, DepthwiseConv2d)
                        and conv.fuses_with_norm()
                        and not isinstance(conv.padding, str)  # fuses_with_norm checked it; narrows the type
                        and fused_depthwise_norm_applies(x, conv.weight, conv.stride, norm, act)
                    ):
                        return run_fused_depthwise_norm(
                            x, conv.weight, conv.stride, conv.padding, conv.dilation, norm, act
                        )
                    return batch_norm_act(conv(x), norm, act)
        output: torch.Tensor = super().forward(x)  # type: ignore[no-untyped-call]  # untyped in torch
        return output


class DepthwiseSeparableBlock(nn.Module):
    """MobileNetV1's block: depthwise k x k, norm, activation, then pointwise 1x1, norm, activation.

    Args:
        in_channels: Channels of the input.
        out_channels: Channels of the output, mixed by the pointwise stage.
        kernel_size: The depthwise filter's size.
        stride: The depthwise stage's stride.
        dilation: Spacing between the depthwise filter's taps.
        depth_multiplier: Depthwise filters per input channel.
        norm_layer: The normalization after each stage: a name, a callable taking the channels, or None.
        act_layer: The activation after each stage: a name, a class or callable, or None.
        device: Where the parameters are created.
        dtype: The parameters' floating-point type.

    >>> block = DepthwiseSeparableBlock(32, 64)
    >>> block(torch.zeros(1, 32, 8, 8)).shape
    torch.Size([1, 64, 8, 8])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair = 3,
        stride: IntPair = 1,
        dilation: IntPair = 1,
        depth_multiplier: int = 1,
        norm_layer: NormLayer = "batchnorm",
        act_layer: ActLayer = "relu",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        in_channels = check_positive("in_channels", in_channels)
        out_channels = check_positive("out_channels", out_channels)
        depth_multiplier = check_positive("depth_multiplier", depth_multiplier)
        hidden = in_channels * depth_multiplier
        self.depthwise = ConvNormAct(
            in_channels,
            hidden,
            kernel_size,
            stride=stride,
            dilation=dilation,
            groups=in_channels,
            norm_layer=norm_layer,
            act_layer=act_layer,
            device=device,
            dtype=dtype,
        )
        self.pointwise = ConvNormAct(
            hidden, out_channels, 1, norm_layer=norm_layer, act_layer=act_layer, device=device, dtype=dtype
        )
        self.in_channels = in_channels
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the depthwise stage, then the pointwise stage, each with its norm and activation."""
        output: torch.Tensor = self.pointwise(self.depthwise(x))
        return output


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expansion, k x k depthwise, linear 1x1 projection, residual when shapes allow.

    The expansion is skipped when ``expand_ratio`` is 1; the residual is added only when ``stride`` is 1
    and ``in_channels == out_channels``. Children (``.conv``) are laid out like torchvision's block, so
    weights move between the two unchanged.

    Args:
        in_channels: Channels of the input.
        out_channels: Channels of the output (the narrow bottleneck).
        stride: The depthwise step's stride (1 or 2 in MobileNetV2).
        expand_ratio: How many times wider the hidden layer is than ``in_channels`` (6 in
            MobileNetV2); the hidden width is ``round(in_channels * expand_ratio)``.
        kernel_size: The depthwise filter's size.
        dilation: Spacing between the depthwise filter's taps.
        norm_layer: The normalization after each convolution: a name, a callable taking the channels, or
            None.
        act_layer: The activation after the expansion and the depthwise step (never after the
            projection: the bottleneck stays linear).
        device: Where the parameters are created.
        dtype: The parameters' floating-point type.

    >>> block = InvertedResidual(16, 16, stride=1, expand_ratio=6)
    >>> block.use_res_connect, block(torch.zeros(2, 16, 8, 8)).shape
    (True, torch.Size([2, 16, 8, 8]))
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: IntPair,
        expand_ratio: float,
        kernel_size: IntPair = 3,
        dilation: IntPair = 1,
        norm_layer: NormLayer = "batchnorm",
        act_layer: ActLayer = "relu6",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        in_channels = check_positive("in_channels", in_channels)
        out_channels = check_positive("out_channels", out_channels)
        stride_pair = to_pair("stride", stride)
        if isinstance(expand_ratio, bool) or not isinstance(expand_ratio, numbers.Real):
            raise ArgumentTypeError(f"expand_ratio must be a positive finite number, got {expand_ratio!r}")
        if not math.isfinite(expand_ratio) or expand_ratio <= 0:
            raise ValueError(f"expand_ratio must be a positive finite number, got {expand_ratio!r}")
        expand_ratio = (
            int(expand_ratio) if isinstance(expand_ratio, numbers.Integral) else float(expand_ratio)
        )
        hidden = round(in_channels * expand_ratio)
        if hidden < 1:
            raise ValueError(
                f"expand_ratio={expand_ratio!r} leaves no hidden channel at in_channels={in_channels} "
                f"(round({in_channels} * {expand_ratio!r}) = 0); it must be at least {0.5 / in_channels:g}"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride_pair
        self.expand_ratio = expand_ratio
        self.use_res_connect: bool = stride_pair == (1, 1) and in_channels == out_channels
        factory = {"device": device, "dtype": dtype}
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(
                ConvNormAct(in_channels, hidden, 1, norm_layer=norm_layer, act_layer=act_layer, **factory)
            )
        layers.append(
            ConvNormAct(
                hidden,
                hidden,
                kernel_size,
                stride=stride_pair,
                dilation=dilation,
                groups=hidden,
                norm_layer=norm_layer,
                act_layer=act_layer,
                **factory,
            )
        )
        layers.append(PointwiseConv2d(hidden, out_channels, bias=False, **factory))
        projection_norm = make_norm(norm_layer, out_channels)
        if projection_norm is not None:
            layers.append(projection_norm.to(device=device, dtype=dtype))
        self.conv: nn.Sequential = nn.Sequential(*layers)
        self._has_projection_norm: bool = projection_norm is not None
        self.fused: bool = True

    def norm_act_pair(self) -> tuple[nn.Module, nn.Module | None] | None:
        """The projection's normalization (no activation follows it), if ``conv`` ends with one."""
        return (self.conv[-1], None) if self._has_projection_norm else None

    def _branch(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused and self.training:
            pair = self.norm_act_pair()
            if pair is not None:
                norm, act = pair
                if can_fuse(norm, act):
                    for layer in list(self.conv)[:-1]:
                        x = layer(x)
                    return batch_norm_act(x, norm, act)
        output: torch.Tensor = self.conv(x)
        return output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Expand, filter, project ``x``; add ``x`` back when ``use_res_connect``."""
        if self.use_res_connect:
            return x + self._branch(x)
        return self._branch(x)
