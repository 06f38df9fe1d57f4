"""Efficient-convolution building blocks: depthwise, pointwise, separable, the MobileNet blocks, and a
low-rank linear layer."""

from torch.nn import ChannelShuffle

from sepconv.layers.blocks import ConvNormAct, DepthwiseSeparableBlock, InvertedResidual
from sepconv.layers.conv import Conv2d, name_layers
from sepconv.layers.depthwise import DepthwiseConv2d, PointwiseConv2d
from sepconv.layers.factory import make_act, make_norm
from sepconv.layers.low_rank import LowRankLinear
from sepconv.layers.separable import SeparableConv2d

__all__ = [
    "ChannelShuffle",
    "Conv2d",
    "ConvNormAct",
    "DepthwiseConv2d",
    "DepthwiseSeparableBlock",
    "InvertedResidual",
    "LowRankLinear",
    "PointwiseConv2d",
    "SeparableConv2d",
    "make_act",
    "make_norm",
    "name_layers",
]
