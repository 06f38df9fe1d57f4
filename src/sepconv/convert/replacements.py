"""The layer that replaces a convolution or a linear layer at a rank, with its weights from the SVD.

:func:`separable_like` builds the :class:`~sepconv.layers.SeparableConv2d` that
:func:`~sepconv.convert.to_separable` puts in a convolution's place, :func:`low_rank_like` the
:class:`~sepconv.layers.LowRankLinear` that :func:`~sepconv.convert.to_low_rank` puts in a linear
layer's; both are what :func:`~sepconv.convert.layer_output_errors` measures and what the optimizer
times, so each is built one way only. (Importable from :mod:`sepconv.convert.separable` and
:mod:`sepconv.convert.low_rank` too.)
"""

from __future__ import annotations

from torch import nn

from sepconv.checks import describe_integer
from sepconv.convert.svd import (
    Decomposition,
    LinearDecomposition,
    linear_max_rank,
    linear_svd,
    load_linear_svd,
    load_svd,
)
from sepconv.errors import ParameterError
from sepconv.layers.conv import Conv2d as SepconvConv2d
from sepconv.layers.low_rank import LowRankLinear
from sepconv.layers.separable import SeparableConv2d

__all__ = ["low_rank_like", "separable_like"]


def _pair(values: tuple[int, ...]) -> tuple[int, int]:
    # nn.Conv2d keeps its sizes as pairs, typed as tuples of any length
    first, second = values
    return first, second


def separable_like(conv: nn.Conv2d, rank: int, svd: Decomposition | None) -> SeparableConv2d:
    """A SeparableConv2d with ``conv``'s geometry and ``rank`` filters per input channel.

    Its weights are the rank-``rank`` split of ``svd`` (:func:`~sepconv.convert.svd.channel_svd` of ``conv``), or the
    layer's own random initialisation when ``svd`` is None.
    """
    padding = conv.padding_spec if isinstance(conv, SepconvConv2d) else conv.padding
    layer = SeparableConv2d(
        conv.in_channels,
        conv.out_channels,
        _pair(conv.kernel_size),
        stride=_pair(conv.stride),
        padding=padding if isinstance(padding, str) else _pair(padding),
        dilation=_pair(conv.dilation),
        depth_multiplier=rank,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )
    layer.train(conv.training)
    if svd is not None:
        load_svd(layer, conv, rank, svd)
    for parameter in layer.parameters():
        parameter.requires_grad_(conv.weight.requires_grad)
    return layer


def low_rank_like(
    linear: nn.Linear, rank: int, *, init: str = "svd", svd: LinearDecomposition | None = None
) -> LowRankLinear:
    """A :class:`~sepconv.layers.LowRankLinear` with ``linear``'s sizes, bias, device, dtype and mode.

    ``init="svd"`` gives it the rank-``rank`` split of ``linear``'s weights (``svd``: a
    :func:`~sepconv.convert.svd.linear_svd` of ``linear`` already computed, to build several ranks from
    one decomposition); ``"random"`` its own default initialisation, enough to time it. ``rank`` is at
    most min(in_features, out_features), where the split is already exact.

    >>> import torch
    >>> linear = nn.Linear(6, 4)
    >>> pair = low_rank_like(linear, 4)
    >>> x = torch.randn(3, 6)
    >>> torch.allclose(pair(x), linear(x), atol=1e-6)
    True
    """
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"low_rank_like expects an nn.Linear for linear, got {type(linear).__name__}")
    exact = linear_max_rank(linear)
    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= exact:
        raise ParameterError(
            f"rank must be {describe_integer(1, exact)} for a {linear.in_features}x{linear.out_features} "
            f"linear layer (at {exact} the split is already exact), got {rank!r}",
            param="rank",
        )
    if init not in ("svd", "random"):
        raise ParameterError(f"init must be 'svd' or 'random', got {init!r}", param="init")
    layer = LowRankLinear(
        linear.in_features,
        linear.out_features,
        rank,
        bias=linear.bias is not None,
        device=linear.weight.device,
        dtype=linear.weight.dtype,
    )
    layer.train(linear.training)
    if init == "svd":
        load_linear_svd(layer, linear, linear_svd(linear) if svd is None else svd)
    for parameter in layer.parameters():
        parameter.requires_grad_(linear.weight.requires_grad)
    return layer
