"""Which convolutions of a model :func:`~sepconv.convert.to_separable` converts, and at what rank.

The options are checked here, the eligible ``nn.Conv2d`` layers chosen by kind, sharing, name patterns
and a ``{name: rank}`` mapping (each one left alone gets a reason for the report), and the ranks
checked against each layer's exact one and against the memory the new layers need.
"""

from __future__ import annotations

import fnmatch
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from torch import nn
from torch.nn.utils import parametrize

from sepconv.arithmetic import conv_params, separable_params
from sepconv.checks import check_choice, check_float, describe_integer
from sepconv.convert.fold import _LINEAR_CONV_FORWARDS
from sepconv.convert.svd import max_rank
from sepconv.errors import ParameterError
from sepconv.layers.depthwise import DepthwiseConv2d, PointwiseConv2d

__all__ = [
    "INITS",
    "auto_kept_note",
    "check_options",
    "check_ranks",
    "chosen_conv",
    "eligible_layers",
    "glob_patterns",
    "larger_than_original",
    "named_layers",
    "nothing_to_convert",
    "rank_for",
    "require_rank_memory",
    "unmatched_patterns",
]

INITS = ("svd", "random")


def chosen_conv(model: nn.Module, name: str) -> nn.Conv2d:
    """The layer ``name`` of ``model``, one :func:`eligible_layers` chose (so an ``nn.Conv2d``)."""
    conv = model.get_submodule(name)
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"{name} is a {type(conv).__name__}, not one of the nn.Conv2d layers chosen")
    return conv


def check_options(depth_multiplier: Any, init: str, min_kernel_size: Any, max_relative_error: Any) -> None:
    """Refuse option values :func:`~sepconv.convert.to_separable` cannot use, before the model is looked at."""
    check_choice("init", init, INITS)
    if isinstance(min_kernel_size, bool) or not isinstance(min_kernel_size, int) or min_kernel_size < 2:
        raise ParameterError(
            f"min_kernel_size must be {describe_integer(2)} (a 1x1 convolution is already pointwise), "
            f"got {min_kernel_size!r}",
            param="min_kernel_size",
        )
    if isinstance(depth_multiplier, Mapping):
        for name, rank in depth_multiplier.items():
            if not isinstance(name, str) or isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
                raise ParameterError(
                    f"depth_multiplier must map layer names to {describe_integer(1, plural=True)}, "
                    f"got {name!r}: {rank!r}",
                    param="depth_multiplier",
                )
    elif depth_multiplier == "auto":
        if max_relative_error is None:
            raise ParameterError(
                "depth_multiplier='auto' needs max_relative_error (the largest relative weight error a "
                "layer may have, e.g. 0.1)",
                param="max_relative_error",
                mentions=("depth_multiplier", "max_relative_error"),
            )
        if init != "svd":
            raise ParameterError(
                f"depth_multiplier='auto' picks ranks from the SVD, so init must be 'svd', got {init!r}",
                param="init",
                mentions=("depth_multiplier",),
            )
    elif isinstance(depth_multiplier, bool) or not isinstance(depth_multiplier, int) or depth_multiplier < 1:
        raise ParameterError(
            f"depth_multiplier must be {describe_integer(1)}, 'auto' or a {{layer name: integer}} dict, "
            f"got {depth_multiplier!r}",
            param="depth_multiplier",
        )
    if max_relative_error is not None:
        if depth_multiplier != "auto":
            raise ParameterError(
                f"max_relative_error applies with depth_multiplier='auto' only, got depth_multiplier={depth_multiplier!r}",
                param="max_relative_error",
                mentions=("depth_multiplier", "max_relative_error"),
            )
        check_float("max_relative_error", max_relative_error, minimum=0, maximum=1)


def glob_patterns(name: str, value: str | Sequence[str] | None) -> list[str]:
    """``value`` (one glob, several, or None) as a list; ``name`` is the option, for the error."""
    if value is None:
        return []
    patterns = [value] if isinstance(value, str) else list(value)
    for pattern in patterns:
        if not isinstance(pattern, str) or not pattern:
            raise ValueError(
                f"{name} must be a glob pattern or a list of them (e.g. 'features.*'), got {value!r}"
            )
    return patterns


def _first_match(name: str, patterns: Iterable[str]) -> str | None:
    return next((pattern for pattern in patterns if fnmatch.fnmatchcase(name, pattern)), None)


def unmatched_patterns(model: nn.Module, include: list[str], exclude: list[str]) -> list[str]:
    """A note for each pattern that names no module of ``model`` (a typo selects nothing, silently)."""
    names = [name for name, _ in model.named_modules() if name]
    return [
        f"{kind} pattern {pattern!r} matches no layer of {type(model).__name__}"
        for kind, patterns in (("include", include), ("exclude", exclude))
        for pattern in patterns
        if not any(fnmatch.fnmatchcase(name, pattern) for name in names)
    ]


def eligible_layers(
    model: nn.Module, min_kernel_size: int, include: list[str], exclude: list[str]
) -> tuple[list[str], list[tuple[str, str]]]:
    """Names of the convolutions to convert, and (name, reason) for each nn.Conv2d left alone."""
    counts = Counter(id(module) for _, module in model.named_modules(remove_duplicate=False))
    chosen, skipped = [], []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Conv2d):
            continue
        reason = _why_not(module, min_kernel_size)
        if reason is None and counts[id(module)] > 1:
            reason = "shared: reachable under more than one name"
        if reason is None and include and _first_match(name, include) is None:
            reason = "not included"
        if reason is None and (pattern := _first_match(name, exclude)) is not None:
            reason = f"excluded by {pattern!r}"
        if reason is None:
            chosen.append(name)
        else:
            skipped.append((name, reason))
    return chosen, skipped


def _why_not(conv: nn.Conv2d, min_kernel_size: int) -> str | None:
    if isinstance(conv, DepthwiseConv2d):
        return "already depthwise"
    if isinstance(conv, PointwiseConv2d):
        return "already pointwise"
    if conv.groups != 1:
        return f"grouped (groups={conv.groups})"
    if max(conv.kernel_size) < min_kernel_size:
        return f"{conv.kernel_size[0]}x{conv.kernel_size[1]} kernel"
    # A subclass with its own forward (weight standardization, say) does not compute conv(x, weight):
    # the same rule fold_batchnorm applies.
    if type(conv).forward not in _LINEAR_CONV_FORWARDS:
        return f"{type(conv).__name__} has its own forward"
    if parametrize.is_parametrized(conv):
        return "parametrized weight"
    return None


def named_layers(
    model: nn.Module, chosen: list[str], skipped: list[tuple[str, str]], ranks: Mapping[str, int]
) -> list[str]:
    """The layers a {name: rank} mapping names, each of which must be an eligible convolution."""
    reasons = dict(skipped)
    for name in ranks:
        if name not in chosen:
            why = reasons.get(name, "no nn.Conv2d has this name")
            raise ParameterError(
                f"depth_multiplier names layer {name!r}, which cannot be converted: {why}",
                param="depth_multiplier",
            )
    return [name for name in chosen if name in ranks]


def nothing_to_convert(model: nn.Module, skipped: list[tuple[str, str]], include: list[str]) -> str:
    """Why no layer of ``model`` was chosen: the reasons of the layers left alone, most common first."""
    if not skipped:
        return f"{type(model).__name__} has no nn.Conv2d to convert to a separable convolution"
    reasons = Counter(reason for _, reason in skipped)
    listed = ", ".join(f"{count} {reason}" for reason, count in reasons.most_common(4))
    return (
        f"{type(model).__name__} has no convolution to convert: its {len(skipped)} nn.Conv2d layers are "
        f"grouped, 1x1, excluded or otherwise ineligible ({listed})"
        + (f"; include patterns: {', '.join(include)}" if include else "")
    )


def check_ranks(model: nn.Module, chosen: list[str], depth_multiplier: Any) -> str | None:
    """Refuse ranks above the exact one where they only add parameters; a note for the layers capped.

    At r = min(C_out, k^2) the conversion is already exact: a larger r adds filters whose mixing is
    zero, a model several times larger that computes the same. A mapping that asks that of a layer is
    refused; one integer r above the exact rank of *every* layer is refused; one above the exact rank
    of some layers only (those with few output channels) is capped there, and the note says which.
    """
    exact = {name: max_rank(chosen_conv(model, name)) for name in chosen}
    if isinstance(depth_multiplier, Mapping):
        for name, rank in depth_multiplier.items():
            if name in exact and rank > exact[name]:
                raise ParameterError(
                    f"depth_multiplier[{name!r}]={rank} is above that layer's exact rank {exact[name]} "
                    f"(min(out_channels, k*k), where the conversion is already exact): use at most {exact[name]}",
                    param="depth_multiplier",
                    mentions=("depth_multiplier",),
                )
        return None
    if depth_multiplier == "auto" or not exact:
        return None
    largest = max(exact.values())
    if depth_multiplier > largest:
        raise ParameterError(
            f"depth_multiplier={depth_multiplier} is above the exact rank of every layer to convert (the "
            f"largest useful rank is {largest}: min(out_channels, k*k), where the conversion is already "
            f"exact); a larger rank only adds parameters: use at most {largest}",
            param="depth_multiplier",
        )
    capped = [f"{name} ({rank})" for name, rank in exact.items() if depth_multiplier > rank]
    if not capped:
        return None
    return (
        f"depth_multiplier={depth_multiplier} is above the exact rank of {len(capped)} layer(s), which use "
        f"their exact rank instead: {', '.join(capped[:5])}{', ...' if len(capped) > 5 else ''}"
    )


def larger_than_original(conv: nn.Conv2d, rank: int) -> str | None:
    """Why ``conv`` stays as it is under ``auto``: its separable form at ``rank`` has more parameters."""
    kernel = (int(conv.kernel_size[0]), int(conv.kernel_size[1]))
    bias = conv.bias is not None
    before = conv_params(conv.in_channels, conv.out_channels, kernel, bias=bias)
    after = separable_params(conv.in_channels, conv.out_channels, kernel, rank, bias=bias)
    # Per layer MACs scale as parameters do (both are weights x output pixels), so one test covers both.
    if after <= before:
        return None
    return f"auto rank {rank} has more parameters, {after:,} > {before:,}"


def require_rank_memory(model: nn.Module, chosen: list[str], depth_multiplier: Any) -> None:
    """Refuse ranks whose new layers cannot fit in memory, before any is built.

    The estimate counts the copy of the model and the new layers' weights at the requested ranks (capped
    at the exact rank, as built); the SVD's workspace and the calibration pass are left out.
    """
    from sepconv.machine import require_memory

    if depth_multiplier == "auto":
        return  # ranks come from the SVD, at most the exact rank: never beyond the layers' own scale
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    for name in chosen:
        conv = chosen_conv(model, name)
        rank = depth_multiplier[name] if isinstance(depth_multiplier, Mapping) else depth_multiplier
        kernel = (int(conv.kernel_size[0]), int(conv.kernel_size[1]))
        count = separable_params(conv.in_channels, conv.out_channels, kernel, min(rank, max_rank(conv)))
        weights += count * conv.weight.element_size()
    value = "{...}" if isinstance(depth_multiplier, Mapping) else depth_multiplier
    require_memory("depth_multiplier", value, weights, what="the copy of the model and its separable layers")


def rank_for(
    name: str, depth_multiplier: Any, max_relative_error: float | None, errors: list[float] | None
) -> int:
    """The rank of layer ``name``: given, or under ``auto`` the smallest whose weight error is small enough."""
    if isinstance(depth_multiplier, Mapping):
        return int(depth_multiplier[name])
    if depth_multiplier != "auto":
        return int(depth_multiplier)
    assert errors is not None  # check_options: auto needs init="svd"
    # Exact arithmetic gives error 0 at full rank; float64 rounding can leave ~1e-16 there.
    return next(
        (rank for rank in range(1, len(errors)) if errors[rank] <= max_relative_error + 1e-12),  # type: ignore[operator]
        len(errors) - 1,
    )


def auto_kept_note(skipped: Sequence[tuple[str, str]], max_relative_error: float | None) -> str | None:
    """A note naming the layers ``auto`` left as they were (:func:`larger_than_original`), if any."""
    kept = [name for name, reason in skipped if reason.startswith("auto rank")]
    if not kept:
        return None
    return (
        f"depth_multiplier='auto' left {len(kept)} layer(s) as they were ({', '.join(kept[:5])}"
        f"{', ...' if len(kept) > 5 else ''}): at the rank max_relative_error={max_relative_error} needs, "
        "their separable form has more parameters than the original; allow a larger max_relative_error"
    )
