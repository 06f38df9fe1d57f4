"""MobileNetV1 (Howard et al., 2017): a 3x3 stem and 13 depthwise-separable blocks, 28 layers in all.

At width 1.0 and 224x224 input: 4.2M parameters and 569M multiply-adds, as published.
"""

from __future__ import annotations

import torch
from torch import nn

from sepconv.checks import check_float, check_int
from sepconv.layers.blocks import ConvNormAct, DepthwiseSeparableBlock
from sepconv.layers.factory import ActLayer, NormLayer
from sepconv.models.common import init_weights
from sepconv.models.registry import register_model
from sepconv.models.validation import MAX_CHANNELS, MAX_CLASSES, MAX_WIDTH_MULT

__all__ = ["MobileNetV1", "mobilenet_v1"]

# (output channels, stride) of each depthwise-separable block, from the paper's Table 1.
_BLOCKS: tuple[tuple[int, int], ...] = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1),
    (1024, 2), (1024, 1),
)  # fmt: skip


class MobileNetV1(nn.Module):
    """MobileNetV1 with a width multiplier; ``features`` then global pooling and ``classifier``."""

    def __init__(
        self,
        width_mult: float = 1.0,
        num_classes: int = 1000,
        in_channels: int = 3,
        dropout: float = 0.0,
        norm_layer: NormLayer = "batchnorm",
        act_layer: ActLayer = "relu",
    ) -> None:
        super().__init__()
        width_mult = check_float(
            "width_mult", width_mult, minimum=0, maximum=MAX_WIDTH_MULT, min_inclusive=False
        )
        num_classes = check_int("num_classes", num_classes, minimum=1, maximum=MAX_CLASSES)
        in_channels = check_int("in_channels", in_channels, minimum=1, maximum=MAX_CHANNELS)
        dropout = check_float("dropout", dropout, minimum=0, maximum=1, max_inclusive=False)
        channels = max(1, int(32 * width_mult))
        layers: list[nn.Module] = [
            ConvNormAct(in_channels, channels, 3, stride=2, norm_layer=norm_layer, act_layer=act_layer)
        ]
        for out_channels, stride in _BLOCKS:
            out_channels = max(1, int(out_channels * width_mult))
            layers.append(
                DepthwiseSeparableBlock(
                    channels, out_channels, stride=stride, norm_layer=norm_layer, act_layer=act_layer
                )
            )
            channels = out_channels
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(channels, num_classes))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise every weight as torchvision's MobileNets do (He fan-out convolutions, unit norms)."""
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (N, num_classes) for images ``x`` (N, in_channels, H, W)."""
        logits: torch.Tensor = self.classifier(torch.flatten(self.pool(self.features(x)), 1))
        return logits


@register_model("mobilenet_v1", input_size=(3, 224, 224))
def mobilenet_v1(
    *,
    width_mult: float = 1.0,
    num_classes: int = 1000,
    in_channels: int = 3,
    dropout: float = 0.0,
    norm_layer: NormLayer = "batchnorm",
    act_layer: ActLayer = "relu",
) -> MobileNetV1:
    """MobileNetV1 at ``width_mult`` (the paper's alpha: 1.0, 0.75, 0.5, 0.25).

    Args:
        width_mult: Scales every layer's channels.
        num_classes: Outputs of the classifier.
        in_channels: Channels of the input images (3 for RGB, 1 for grayscale).
        dropout: Dropout probability before the classifier.
        norm_layer: The normalization after each convolution: a name, a callable taking the channels, or
            None.
        act_layer: The activation after each normalization.
    """
    return MobileNetV1(
        width_mult=width_mult,
        num_classes=num_classes,
        in_channels=in_channels,
        dropout=dropout,
        norm_layer=norm_layer,
        act_layer=act_layer,
    )
