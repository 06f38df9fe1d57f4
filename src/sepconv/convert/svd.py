"""The maths of a separable conversion: each input channel's filters, split by their SVD.

A k x k convolution from C_in to C_out channels is a sum over input channels: channel i is filtered by
the C_out x k^2 matrix W[:, i]. Its singular value decomposition U S V^T splits that filtering into
spatial filters (the rows of V^T, shared by all outputs) and a mixing of them (U S). Keeping the r
largest singular values of every channel gives r depthwise k x k filters per input channel followed
by a 1 x 1 mixing: a :class:`~sepconv.layers.SeparableConv2d` with ``depth_multiplier = r``. It is the
best rank-r approximation channel by channel (Eckart-Young), and exact once r >= min(C_out, k^2)
(Guo et al., "Network Decoupling", BMVC 2018).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from sepconv.layers.separable import SeparableConv2d

__all__ = ["Decomposition", "channel_svd", "errors_by_rank", "load_svd", "max_rank"]

# U (C_in, C_out, q), S (C_in, q), Vh (C_in, k^2, k^2): each input channel's filters, decomposed.
Decomposition = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def channel_svd(conv: nn.Conv2d) -> Decomposition:
    """U (C_in, C_out, q), S (C_in, q), Vh (C_in, k^2, k^2) of each input channel's C_out x k^2 filters, in float64."""
    weight = conv.weight.detach().to("cpu", torch.float64)
    out_channels, in_channels, kernel_h, kernel_w = weight.shape
    positions = kernel_h * kernel_w
    per_channel = weight.permute(1, 0, 2, 3).reshape(in_channels, out_channels, positions)
    # All k^2 rows of V^T are wanted: when k^2 > C_out, the rows past the rank are more orthonormal
    # filters, used (with zero mixing, so the output is unchanged) when r exceeds the rank. The full
    # U is never wanted (C_in x C_out x C_out values: 1 GB for a 512-channel layer), so the full
    # decomposition runs only where U is the small factor.
    u, s, vh = torch.linalg.svd(per_channel, full_matrices=positions > out_channels)
    q = min(out_channels, positions)
    return u[:, :, :q], s[:, :q], vh


def errors_by_rank(singular_values: torch.Tensor) -> list[float]:
    """Relative Frobenius error of the whole layer at r = 0, 1, ..., q (singular values: C_in x q)."""
    energy = singular_values.square().sum(dim=0)  # per rank, over input channels
    total = float(energy.sum())
    if total == 0.0:
        return [0.0] * (energy.numel() + 1)
    left = [*energy.flip(0).cumsum(0).flip(0).tolist(), 0.0]  # energy from rank j on
    return [math.sqrt(max(value, 0.0) / total) for value in left]


def max_rank(conv: nn.Conv2d) -> int:
    """min(out_channels, k_h * k_w): the depth multiplier at which the conversion of ``conv`` is exact."""
    return min(conv.out_channels, conv.kernel_size[0] * conv.kernel_size[1])


@torch.no_grad()
def load_svd(layer: SeparableConv2d, conv: nn.Conv2d, rank: int, svd: Decomposition) -> None:
    """Give ``layer`` the rank-``rank`` split of ``conv``'s filters (``svd`` is :func:`channel_svd` of ``conv``)."""
    u, s, vh = svd
    in_channels, out_channels = conv.in_channels, conv.out_channels
    kernel_h, kernel_w = conv.kernel_size
    positions, q = kernel_h * kernel_w, s.shape[1]
    # Depthwise output channel i * rank + j is filter j of input channel i (groups = in_channels).
    depthwise = layer.depthwise.weight.detach().to("cpu", torch.float64).reshape(in_channels, rank, positions)
    filters = min(rank, positions)
    depthwise[:, :filters] = vh[:, :filters]
    # Beyond k^2 no direction is left: those filters keep their random initialisation and get zero
    # mixing below, so the output stays exact and fine-tuning can still put them to use.
    pointwise = torch.zeros(out_channels, in_channels, rank, dtype=torch.float64)
    used = min(rank, q)
    pointwise[:, :, :used] = (u[:, :, :used] * s[:, None, :used]).permute(1, 0, 2)
    layer.depthwise.weight.copy_(depthwise.reshape(layer.depthwise.weight.shape))
    layer.pointwise.weight.copy_(pointwise.reshape(layer.pointwise.weight.shape))
    if conv.bias is not None and layer.pointwise.bias is not None:  # built with a bias when conv has one
        layer.pointwise.bias.copy_(conv.bias.detach())
