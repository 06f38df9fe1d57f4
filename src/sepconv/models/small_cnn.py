"""A twin pair of small CNNs for 28x28-to-64x64 images: same topology, standard vs depthwise-separable.

``standard_cnn`` and ``separable_cnn`` share the stem, the pooling, the channel widths and the head;
the only difference is that every 3x3 convolution after the stem is a standard ``Conv2d`` in one and a
depthwise-separable block (dw 3x3 - BN - ReLU - pw 1x1 - BN - ReLU) in the other. Comparing the two
measures exactly what separable convolutions buy and cost.

At the defaults (1 input channel, 10 classes, 28x28): 575,594 vs 72,266 parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from sepconv.checks import check_float, check_int
from sepconv.layers.blocks import ConvNormAct, DepthwiseSeparableBlock
from sepconv.models.registry import register_model
from sepconv.models.validation import MAX_CHANNELS, MAX_CLASSES, check_channel_list

__all__ = ["SmallCNN", "separable_cnn", "standard_cnn"]

BlockFactory = Callable[[int, int], nn.Module]


class SmallCNN(nn.Module):
    """Stem 3x3 conv, then five 3x3 blocks (built by ``block``) in three resolutions, pooling, linear head.

    ``widths`` = (stem, stage 1, stage 2, stage 3) channels; stage 1 has one block, stages 2 and 3 two
    each (the second one widening), with 2x2 max pooling between stages.
    """

    def __init__(
        self,
        block: BlockFactory,
        in_channels: int = 1,
        num_classes: int = 10,
        widths: Sequence[int] = (32, 64, 128, 256),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        in_channels = check_int("in_channels", in_channels, minimum=1, maximum=MAX_CHANNELS)
        num_classes = check_int("num_classes", num_classes, minimum=1, maximum=MAX_CLASSES)
        stem, stage1, stage2, stage3 = check_channel_list("widths", widths, 4)  # stem and three stages
        dropout = check_float("dropout", dropout, minimum=0, maximum=1, max_inclusive=False)
        self.features = nn.Sequential(
            ConvNormAct(in_channels, stem, 3),
            block(stem, stage1),
            nn.MaxPool2d(2),
            block(stage1, stage1),
            block(stage1, stage2),
            nn.MaxPool2d(2),
            block(stage2, stage2),
            block(stage2, stage3),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(stage3, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (N, num_classes) for images ``x`` (N, in_channels, H, W)."""
        logits: torch.Tensor = self.classifier(torch.flatten(self.pool(self.features(x)), 1))
        return logits


def _standard_block(in_channels: int, out_channels: int) -> nn.Module:
    return ConvNormAct(in_channels, out_channels, 3)


def _separable_block(in_channels: int, out_channels: int) -> nn.Module:
    return DepthwiseSeparableBlock(in_channels, out_channels, 3)


@register_model("standard_cnn", input_size=(1, 28, 28))
def standard_cnn(
    *,
    in_channels: int = 1,
    num_classes: int = 10,
    widths: Sequence[int] = (32, 64, 128, 256),
    dropout: float = 0.1,
) -> SmallCNN:
    """The standard twin: every 3x3 convolution is a full ``Conv2d``."""
    return SmallCNN(_standard_block, in_channels, num_classes, widths, dropout)


@register_model("separable_cnn", input_size=(1, 28, 28))
def separable_cnn(
    *,
    in_channels: int = 1,
    num_classes: int = 10,
    widths: Sequence[int] = (32, 64, 128, 256),
    dropout: float = 0.1,
) -> SmallCNN:
    """The separable twin: every 3x3 convolution after the stem is depthwise then pointwise."""
    return SmallCNN(_separable_block, in_channels, num_classes, widths, dropout)
