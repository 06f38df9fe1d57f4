"""Low-rank linear layer: a product of two thin matrices in place of one wide one.

A linear layer from ``in_features`` to ``out_features`` multiplies by an out x in matrix: in x out
MACs per input row and as many weights to read. Through a bottleneck of ``rank`` features it costs
rank x (in + out) instead, less whenever rank < in x out / (in + out). On a classifier such as VGG's
(a 25088 x 4096 matrix, 411 MB of fp32 weights read for every image at batch 1) that is most of the
model's time. :func:`sepconv.convert.to_low_rank` builds these layers from a trained ``nn.Linear``
by its SVD, exact at rank min(in, out).

Both steps are plain ``nn.Linear`` children, so ONNX export, quantization and FLOP counters see two
ordinary matrix products.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sepconv.checks import check_positive
from sepconv.layers.conv import check_bias

__all__ = ["LowRankLinear"]


class LowRankLinear(nn.Module):
    """``y = second(first(x))``: ``first`` maps ``in_features`` to ``rank`` (no bias), ``second`` maps
    ``rank`` to ``out_features`` (with the bias, when ``bias``).

    Works on inputs of any shape ``(*, in_features)``, like ``nn.Linear``. A rank above
    min(in_features, out_features) is allowed but computes nothing a smaller one cannot.

    >>> layer = LowRankLinear(512, 256, rank=16)
    >>> sum(p.numel() for p in layer.parameters())  # 512*16 + 16*256 + 256
    12544
    >>> layer(torch.zeros(4, 512)).shape
    torch.Size([4, 256])
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rank: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        in_features = check_positive("in_features", in_features)
        out_features = check_positive("out_features", out_features)
        rank = check_positive("rank", rank)
        bias = check_bias(bias)
        self.first = nn.Linear(in_features, rank, bias=False, device=device, dtype=dtype)
        self.second = nn.Linear(rank, out_features, bias=bias, device=device, dtype=dtype)

    @property
    def in_features(self) -> int:
        """Size of each input sample (the ``first`` step's ``in_features``)."""
        return self.first.in_features

    @property
    def out_features(self) -> int:
        """Size of each output sample (the ``second`` step's ``out_features``)."""
        return self.second.out_features

    @property
    def rank(self) -> int:
        """Width of the bottleneck between the two steps."""
        return self.first.out_features

    def reset_parameters(self) -> None:
        """Each step's own ``nn.Linear`` initialisation."""
        self.first.reset_parameters()
        self.second.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``x`` (*, in_features) through the rank bottleneck to (*, out_features)."""
        output: torch.Tensor = self.second(self.first(x))
        return output

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this layer (weights aside)."""
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "rank": self.rank,
            "bias": self.second.bias is not None,
        }

    def extra_repr(self) -> str:
        """The arguments ``print(layer)`` shows, worded like ``nn.Linear``'s with the rank between."""
        # nn.Linear's own wording, with the rank between
        config = self.get_config()
        return ", ".join(f"{key}={value}" for key, value in config.items() if key != "bias" or not value)
