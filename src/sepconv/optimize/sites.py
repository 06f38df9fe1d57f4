"""The layers an optimization may change ("sites"), the input each one really sees, and their candidates.

A *site* is a standard convolution that :func:`~sepconv.convert.to_separable` can convert (``groups=1``,
a kernel wider than 1x1) or a large ``nn.Linear`` that :func:`~sepconv.convert.to_low_rank` can split,
found by one forward pass of the model at the image size it will run at. Its *candidates* are the ranks
worth trying: for a convolution r = 1, 2, 4, ... up to the exact rank min(C_out, k^2), for a linear
layer r = 1, 2, 4, ... below the rank at which the pair stops saving work; a rank whose MACs are not
below the original's is no candidate (on a stem with one or three input channels, most are not). The
original layer ("keep", rank ``None``) is always an option.

The cost model (:mod:`sepconv.optimize.costs`), the sensitivity table
(:mod:`sepconv.optimize.sensitivity`) and the planner share these sites, named by the layer's
qualified name as in ``model.named_modules()``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from sepconv.convert.select import MIN_LINEAR_WEIGHTS

__all__ = [
    "MIN_LINEAR_WEIGHTS",
    "Site",
    "build_candidate",
    "candidate_macs",
    "conv_candidate_ranks",
    "find_sites",
    "linear_candidate_ranks",
]


@dataclass(frozen=True)
class Site:
    """One layer the optimizer may replace, as it runs in the model.

    ``input_shape``/``output_shape`` are per sample (no batch dimension): ``(C, H, W)`` for a
    convolution, ``(..., features)`` for a linear layer. ``geometry`` is everything that decides the
    layer's cost apart from its input (JSON-able, the key of measured costs): for a convolution
    in/out channels, kernel size, stride, padding, dilation, padding mode and bias; for a linear layer
    in/out features and bias. ``macs`` counts one sample through the original layer. ``ranks`` are the
    candidate ranks, ascending; ``max_rank`` is the rank at which the replacement is exact.
    """

    name: str
    kind: str  # "conv" or "linear"
    geometry: dict[str, Any] = field(hash=False)
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    macs: int
    max_rank: int
    ranks: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description (``plan.json`` and the reports)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "geometry": dict(self.geometry),
            "input_shape": list(self.input_shape),
            "output_shape": list(self.output_shape),
            "macs": self.macs,
            "max_rank": self.max_rank,
            "ranks": list(self.ranks),
        }


def conv_candidate_ranks(conv: nn.Conv2d) -> tuple[int, ...]:
    """Powers of two below the exact rank min(C_out, k_h k_w), then the exact rank itself."""
    exact = min(conv.out_channels, conv.kernel_size[0] * conv.kernel_size[1])
    return (*_powers_of_two_below(exact), exact)


def linear_candidate_ranks(linear: nn.Linear) -> tuple[int, ...]:
    """Powers of two r with r (in + out) < in x out: the ranks at which a low-rank pair does less work."""
    limit = linear.in_features * linear.out_features / (linear.in_features + linear.out_features)
    return tuple(rank for rank in _powers_of_two_below(math.ceil(limit)) if rank < limit)


def _powers_of_two_below(limit: int) -> list[int]:
    ranks, rank = [], 1
    while rank < limit:
        ranks.append(rank)
        rank *= 2
    return ranks


def candidate_macs(site: Site, rank: int | None) -> int:
    """MACs of one sample through the site's layer at ``rank`` (``None``: the original layer).

    A separable convolution at rank r: C_in r k^2 (depthwise) + C_in r C_out (pointwise) per output
    position; a low-rank linear pair: r (in + out) per input row.
    """
    if rank is None:
        return site.macs
    if site.kind == "conv":
        geometry = site.geometry
        kernel_h, kernel_w = geometry["kernel_size"]
        positions = math.prod(site.output_shape[1:])
        in_channels, out_channels = geometry["in_channels"], geometry["out_channels"]
        return positions * in_channels * rank * (kernel_h * kernel_w + out_channels)
    rows = math.prod(site.input_shape[:-1])
    return rows * rank * (site.geometry["in_features"] + site.geometry["out_features"])


def find_sites(
    model: nn.Module,
    input_size: Sequence[int],
    *,
    min_linear_weights: int = MIN_LINEAR_WEIGHTS,
    include_stem: bool = True,
) -> tuple[list[Site], list[tuple[str, str]]]:
    """The sites of ``model`` at ``input_size`` (C, H, W), in forward order, and (name, reason) for the rest.

    Each eligible convolution (the rule of :func:`~sepconv.convert.to_separable`) and each
    ``nn.Linear`` with at least ``min_linear_weights`` weights that runs exactly once in a forward
    pass of one image is a site with at least one candidate rank. A layer that runs several times, or
    never, or has no rank that saves MACs, is listed with the reason. ``include_stem=False`` leaves out
    the first convolution that runs. ``model`` is not changed (a copy runs, in eval mode, without
    gradients).
    """
    from sepconv.convert.select import eligible_layers, eligible_linears

    convs, skipped = eligible_layers(model, 2, [], [])
    linears, skipped_linears = eligible_linears(model, min_linear_weights, [], [])
    skipped.extend(skipped_linears)
    shapes = _observed_shapes(model, input_size, [*convs, *linears])
    sites: list[Site] = []
    for name, calls in shapes.items():
        if len(calls) != 1:
            skipped.append((name, f"runs {len(calls)} times in one forward pass"))
            continue
        layer = model.get_submodule(name)
        ((input_shape, output_shape),) = calls
        site = _site(name, layer, input_shape, output_shape)
        if not site.ranks:
            skipped.append((name, "no rank does less work than the original layer"))
        else:
            sites.append(site)
    if not include_stem and sites and sites[0].kind == "conv":
        skipped.append((sites[0].name, "the stem, left alone"))
        sites = sites[1:]
    return sites, skipped


def _observed_shapes(
    model: nn.Module, input_size: Sequence[int], names: list[str]
) -> dict[str, list[tuple[tuple[int, ...], tuple[int, ...]]]]:
    """Per layer name, (input, output) shapes without the batch dimension at each call, in call order."""
    probe = copy.deepcopy(model).eval()
    calls: dict[str, list[tuple[tuple[int, ...], tuple[int, ...]]]] = {}

    def recorder(name: str) -> Any:
        def record(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            calls.setdefault(name, []).append((tuple(args[0].shape[1:]), tuple(output.shape[1:])))

        return record

    handles = [probe.get_submodule(name).register_forward_hook(recorder(name)) for name in names]
    parameter = next(probe.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    dtype = parameter.dtype if parameter is not None and parameter.is_floating_point() else torch.float32
    try:
        with torch.no_grad():
            probe(torch.zeros((1, *input_size), device=device, dtype=dtype))
    finally:
        for handle in handles:
            handle.remove()
    # forward order; a layer that never ran is reported with zero calls
    ordered = dict(calls)
    ordered.update({name: [] for name in names if name not in calls})
    return ordered


def _site(name: str, layer: nn.Module, input_shape: tuple[int, ...], output_shape: tuple[int, ...]) -> Site:
    bias = layer.bias is not None
    if isinstance(layer, nn.Conv2d):
        padding = layer.padding if isinstance(layer.padding, str) else list(layer.padding)
        geometry: dict[str, Any] = {
            "in_channels": layer.in_channels,
            "out_channels": layer.out_channels,
            "kernel_size": list(layer.kernel_size),
            "stride": list(layer.stride),
            "padding": padding,
            "dilation": list(layer.dilation),
            "padding_mode": layer.padding_mode,
            "bias": bias,
        }
        positions = math.prod(output_shape[1:])
        macs = positions * layer.out_channels * layer.in_channels * math.prod(layer.kernel_size)
        kind, max_rank, ranks = (
            "conv",
            min(layer.out_channels, math.prod(layer.kernel_size)),
            conv_candidate_ranks(layer),
        )
    elif isinstance(layer, nn.Linear):
        geometry = {"in_features": layer.in_features, "out_features": layer.out_features, "bias": bias}
        macs = math.prod(input_shape[:-1]) * layer.in_features * layer.out_features
        kind, max_rank = "linear", min(layer.in_features, layer.out_features)
        ranks = linear_candidate_ranks(layer)
    else:
        raise TypeError(f"{name} is a {type(layer).__name__}: a site is an nn.Conv2d or an nn.Linear")
    site = Site(name, kind, geometry, input_shape, output_shape, macs, max_rank, ())
    cheaper = tuple(rank for rank in ranks if candidate_macs(site, rank) < macs)
    return Site(name, kind, geometry, input_shape, output_shape, macs, max_rank, cheaper)


def build_candidate(layer: nn.Module, rank: int | None, *, init: str = "svd") -> nn.Module:
    """A standalone module computing the site's layer at ``rank``: a copy of it (``None``), a
    :class:`~sepconv.layers.SeparableConv2d` or a :class:`~sepconv.layers.LowRankLinear`.

    ``init="svd"`` gives the replacement the rank-r split of the layer's weights (what the sensitivity
    table measures); ``"random"`` its default initialisation, enough to time it.
    """
    if rank is None:
        return copy.deepcopy(layer)
    if isinstance(layer, nn.Conv2d):
        from sepconv.convert.separable import separable_like
        from sepconv.convert.svd import channel_svd

        return separable_like(layer, rank, channel_svd(layer) if init == "svd" else None)
    if isinstance(layer, nn.Linear):
        from sepconv.convert.low_rank import low_rank_like

        return low_rank_like(layer, rank, init=init)
    raise TypeError(f"build_candidate takes an nn.Conv2d or nn.Linear for layer, got {type(layer).__name__}")
