"""MobileNetV2 (Sandler et al., 2018): inverted residual blocks with linear bottlenecks.

The module tree mirrors ``torchvision.models.mobilenet_v2`` so that ``state_dict`` keys and shapes are
identical at the same ``width_mult``, ``round_nearest`` and ``num_classes``: weights load both ways with
``strict=True`` and give the same outputs. At width 1.0, 224x224: 3,504,872 parameters, ~300M MACs.
"""

from __future__ import annotations

import torch
from torch import nn

from sepconv.arithmetic import make_divisible
from sepconv.checks import check_float, check_int
from sepconv.layers.blocks import ConvNormAct, InvertedResidual
from sepconv.layers.factory import ActLayer, NormLayer
from sepconv.models.common import init_weights
from sepconv.models.registry import register_model
from sepconv.models.validation import MAX_CHANNELS, MAX_CLASSES, MAX_WIDTH_MULT

__all__ = ["MobileNetV2", "mobilenet_v2"]

# (expand ratio t, output channels c, repeats n, first stride s), from the paper's Table 2.
_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class MobileNetV2(nn.Module):
    """MobileNetV2: ``features`` (stem, 17 inverted residuals, 1x1 head conv), pooling, ``classifier``."""

    def __init__(
        self,
        width_mult: float = 1.0,
        num_classes: int = 1000,
        in_channels: int = 3,
        round_nearest: int = 8,
        dropout: float = 0.2,
        norm_layer: NormLayer = "batchnorm",
        act_layer: ActLayer = "relu6",
    ) -> None:
        super().__init__()
        width_mult = check_float(
            "width_mult", width_mult, minimum=0, maximum=MAX_WIDTH_MULT, min_inclusive=False
        )
        num_classes = check_int("num_classes", num_classes, minimum=1, maximum=MAX_CLASSES)
        in_channels = check_int("in_channels", in_channels, minimum=1, maximum=MAX_CHANNELS)
        round_nearest = check_int("round_nearest", round_nearest, minimum=1, maximum=MAX_CHANNELS)
        dropout = check_float("dropout", dropout, minimum=0, maximum=1, max_inclusive=False)
        channels = make_divisible(32 * width_mult, round_nearest)
        self.last_channel = make_divisible(1280 * max(1.0, width_mult), round_nearest)
        layers: list[nn.Module] = [
            ConvNormAct(in_channels, channels, 3, stride=2, norm_layer=norm_layer, act_layer=act_layer)
        ]
        for expand_ratio, base_channels, repeats, first_stride in _SETTINGS:
            out_channels = make_divisible(base_channels * width_mult, round_nearest)
            for index in range(repeats):
                stride = first_stride if index == 0 else 1
                layers.append(
                    InvertedResidual(
                        channels,
                        out_channels,
                        stride,
                        expand_ratio,
                        norm_layer=norm_layer,
                        act_layer=act_layer,
                    )
                )
                channels = out_channels
        layers.append(ConvNormAct(channels, self.last_channel, 1, norm_layer=norm_layer, act_layer=act_layer))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.last_channel, num_classes))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise every weight as torchvision's MobileNetV2 does (He fan-out convolutions, unit norms)."""
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (N, num_classes) for images ``x`` (N, in_channels, H, W)."""
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        logits: torch.Tensor = self.classifier(torch.flatten(x, 1))
        return logits


@register_model("mobilenet_v2", input_size=(3, 224, 224))
def mobilenet_v2(
    *,
    width_mult: float = 1.0,
    num_classes: int = 1000,
    in_channels: int = 3,
    round_nearest: int = 8,
    dropout: float = 0.2,
    norm_layer: NormLayer = "batchnorm",
    act_layer: ActLayer = "relu6",
) -> MobileNetV2:
    """MobileNetV2 at ``width_mult``; weights interchange with torchvision's at the same settings.

    Args:
        width_mult: Scales every layer's channels (the paper's alpha), rounded to ``round_nearest``.
        num_classes: Outputs of the classifier.
        in_channels: Channels of the input images (3 for RGB, 1 for grayscale).
        round_nearest: Channel counts are rounded to a multiple of this (1 turns the rounding off).
        dropout: Dropout probability before the classifier.
        norm_layer: The normalization after each convolution: a name, a callable taking the channels, or
            None.
        act_layer: The activation inside the blocks (ReLU6 in the paper).
    """
    return MobileNetV2(
        width_mult=width_mult,
        num_classes=num_classes,
        in_channels=in_channels,
        round_nearest=round_nearest,
        dropout=dropout,
        norm_layer=norm_layer,
        act_layer=act_layer,
    )
