"""The maths of a separable conversion: each input channel's filters, split by their SVD.

A k x k convolution from C_in to C_out channels is a sum over input channels: channel i is filtered by
the C_out x k^2 matrix W[:, i]. Its singular value decomposition U S V^T splits that filtering into
spatial filters (the rows of V^T, shared by all outputs) and a mixing of them (U S). Keeping the r
largest singular values of every channel gives r depthwise k x k filters per input channel followed
by a 1 x 1 mixing: a :class:`~sepconv.layers.SeparableConv2d` with ``depth_multiplier = r``. It is the
best rank-r approximation channel by channel (Eckart-Young), and exact once r >= min(C_out, k^2)
(Guo et al., "Network Decoupling", BMVC 2018).

A linear layer's out x in matrix W splits the same way, as a whole: the r largest singular directions
give a :class:`~sepconv.layers.LowRankLinear` of rank r, exact once r >= min(in, out).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from sepconv.layers.low_rank import LowRankLinear
from sepconv.layers.separable import SeparableConv2d

__all__ = [
    "Decomposition",
    "LinearDecomposition",
    "channel_svd",
    "errors_by_rank",
    "linear_errors_by_rank",
    "linear_max_rank",
    "linear_svd",
    "load_linear_svd",
    "load_svd",
    "max_rank",
]

#: U (C_in, C_out, q), S (C_in, q), Vh (C_in, k*k, k*k): each input channel's filters, decomposed.
Decomposition = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
#: left (out, q), right (q, in), energies (q,): W = left @ right, and the first r columns and rows give the
#: best rank-r approximation; energies are the squared singular values,
#: largest first, in float64.
LinearDecomposition = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


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


def linear_svd(linear: nn.Linear) -> LinearDecomposition:
    """The split of ``linear``'s weight along its singular directions, largest first, in float64.

    Found from the eigenvectors of the smaller Gram matrix (W^T W or W W^T, min(in, out) square)
    rather than a full SVD: the same subspaces, and for a VGG classifier (25088 x 4096) a matrix
    product and a 4096 x 4096 eigenproblem instead of an SVD of the whole matrix, several times
    faster. The directions are orthonormal, so the split is exact at full rank; singular values
    below ~1e-8 of the largest are lost in the squaring, which changes no rank worth keeping.
    """
    weight = linear.weight.detach().to("cpu", torch.float64)
    out_features, in_features = weight.shape
    if in_features <= out_features:
        energies, vectors = torch.linalg.eigh(weight.T @ weight)  # right singular vectors, ascending
        vectors, energies = vectors.flip(1), energies.flip(0)
        left, right = weight @ vectors, vectors.T
    else:
        energies, vectors = torch.linalg.eigh(weight @ weight.T)  # left singular vectors, ascending
        vectors, energies = vectors.flip(1), energies.flip(0)
        left, right = vectors, vectors.T @ weight
    return left, right, energies.clamp_min(0.0)


def linear_errors_by_rank(svd: LinearDecomposition) -> list[float]:
    """Relative Frobenius error ||W - W_r|| / ||W|| of a linear layer at r = 0, 1, ..., min(in, out)."""
    return errors_by_rank(svd[2].sqrt()[None, :])


def linear_max_rank(linear: nn.Linear) -> int:
    """min(in_features, out_features): the rank at which a low-rank pair reproduces ``linear`` exactly."""
    return min(linear.in_features, linear.out_features)


@torch.no_grad()
def load_linear_svd(layer: LowRankLinear, linear: nn.Linear, svd: LinearDecomposition) -> None:
    """Give ``layer`` the rank-``layer.rank`` split of ``linear`` (``svd`` is :func:`linear_svd` of it).

    ``first`` projects onto the top singular directions (orthonormal rows), ``second`` holds the
    magnitudes, as the depthwise and pointwise steps of a separable conversion do.
    """
    left, right, _ = svd
    rank = layer.rank
    layer.first.weight.copy_(right[:rank])
    layer.second.weight.copy_(left[:, :rank])
    if linear.bias is not None and layer.second.bias is not None:  # built with a bias when linear has one
        layer.second.bias.copy_(linear.bias.detach())
