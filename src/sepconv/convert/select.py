"""Which layers of a model :func:`~sepconv.convert.to_separable` and :func:`~sepconv.convert.to_low_rank`
convert, and at what rank.

The options are checked here, the eligible ``nn.Conv2d`` (or ``nn.Linear``) layers chosen by kind,
size, sharing, name patterns and a ``{name: rank}`` mapping (each one left alone gets a reason for the
report), and the ranks checked against each layer's exact one and against the memory the new layers
need.
"""

from __future__ import annotations

import fnmatch
import warnings
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
from sepconv.layers.low_rank import LowRankLinear

__all__ = [
    "INITS",
    "MIN_LINEAR_WEIGHTS",
    "ConversionWarning",
    "auto_kept_note",
    "check_exact_ranks",
    "check_options",
    "check_rank_options",
    "check_ranks",
    "chosen_conv",
    "eligible_layers",
    "eligible_linears",
    "glob_patterns",
    "larger_model_note",
    "larger_than_original",
    "named_layers",
    "note",
    "nothing_to_convert",
    "output_error_ranks",
    "rank_for",
    "refuse_lazy",
    "require_rank_memory",
    "unmatched_patterns",
]

#: How a conversion initialises the new layers: ``svd`` (from the original weights) or ``random``.
INITS = ("svd", "random")

# A linear layer is worth splitting from this many weights on (256 KB in fp32): below it, reading the
# weights costs less than the call itself, and a low-rank pair has nothing to win.
#: A linear layer is worth splitting from this many weights on (256 KB in float32): below it, reading the
#: weights costs less than the call itself.
MIN_LINEAR_WEIGHTS = 65_536


def chosen_conv(model: nn.Module, name: str) -> nn.Conv2d:
    """The layer ``name`` of ``model``, one :func:`eligible_layers` chose (so an ``nn.Conv2d``)."""
    conv = model.get_submodule(name)
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"{name} is a {type(conv).__name__}, not one of the nn.Conv2d layers chosen")
    return conv


class ConversionWarning(UserWarning):
    """A conversion setting that selected nothing or did less than asked: a pattern matching no layer, a
    rank capped at the exact one, layers ``auto`` left as they were, a result larger than the original."""


def note(notes: list[str], message: str | None) -> None:
    """Keep ``message`` for the report and warn with it, pointing at the caller of the conversion.

    Called from the conversion function itself (``to_separable``, ``to_low_rank``).
    """
    if message is None:
        return
    notes.append(message)
    warnings.warn(message, ConversionWarning, stacklevel=3)


def refuse_lazy(model: nn.Module) -> None:
    """A lazy layer has no weights to decompose until the model has run once."""
    lazy = [
        name for name, p in model.named_parameters() if isinstance(p, nn.parameter.UninitializedParameter)
    ]
    if lazy:
        raise ValueError(
            f"{type(model).__name__} has uninitialized (lazy) parameters ({', '.join(lazy[:3])}): run it once "
            f"on an input before converting it"
        )


def check_options(
    depth_multiplier: Any,
    init: str,
    min_kernel_size: Any,
    max_relative_error: Any,
    max_output_error: Any = None,
    calibration: Any = None,
) -> None:
    """Refuse option values :func:`~sepconv.convert.to_separable` cannot use, before the model is looked at."""
    check_choice("init", init, INITS)
    if isinstance(min_kernel_size, bool) or not isinstance(min_kernel_size, int) or min_kernel_size < 2:
        raise ParameterError(
            f"min_kernel_size must be {describe_integer(2)} (a 1x1 convolution is already pointwise), "
            f"got {min_kernel_size!r}",
            param="min_kernel_size",
        )
    check_rank_options(
        "depth_multiplier", depth_multiplier, init, max_relative_error, max_output_error, calibration
    )


def check_rank_options(
    param: str,
    ranks: Any,
    init: str,
    max_relative_error: Any,
    max_output_error: Any = None,
    calibration: Any = None,
) -> None:
    """Refuse a rank option (``param``: an int, ``"auto"`` or ``{name: int}``) and the options that go with it.

    ``"auto"`` picks each layer's rank from the SVD (so ``init="svd"``) by ``max_relative_error`` (weight
    error), ``max_output_error`` (output error on ``calibration``, which it then needs), or both.
    """
    check_choice("init", init, INITS)
    if isinstance(ranks, Mapping):
        for name, rank in ranks.items():
            if not isinstance(name, str) or isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
                raise ParameterError(
                    f"{param} must map layer names to {describe_integer(1, plural=True)}, got {name!r}: {rank!r}",
                    param=param,
                )
    elif ranks == "auto":
        if max_relative_error is None and max_output_error is None:
            raise ParameterError(
                f"{param}='auto' needs max_relative_error (the largest relative weight error a layer may "
                "have, e.g. 0.1) or max_output_error (the largest relative output error on calibration "
                "inputs)",
                param="max_relative_error",
                mentions=(param, "max_relative_error", "max_output_error"),
            )
        if init != "svd":
            raise ParameterError(
                f"{param}='auto' picks ranks from the SVD, so init must be 'svd', got {init!r}",
                param="init",
                mentions=(param,),
            )
    elif isinstance(ranks, bool) or not isinstance(ranks, int) or ranks < 1:
        raise ParameterError(
            f"{param} must be {describe_integer(1)}, 'auto' or a {{layer name: integer}} dict, got {ranks!r}",
            param=param,
        )
    for option, value in (("max_relative_error", max_relative_error), ("max_output_error", max_output_error)):
        if value is None:
            continue
        if ranks != "auto":
            raise ParameterError(
                f"{option} applies with {param}='auto' only, got {param}={ranks!r}",
                param=option,
                mentions=(param, option),
            )
        check_float(option, value, minimum=0, maximum=1)
    if max_output_error is not None and calibration is None:
        raise ParameterError(
            "max_output_error needs calibration (a batch of inputs to measure the output errors on)",
            param="calibration",
            mentions=("max_output_error", "calibration"),
        )


# auto by output error measures every rank up to this one, then powers of two
EVERY_RANK_UP_TO = 16


def output_error_ranks(exact: int) -> list[int]:
    """The ranks ``auto`` measures the output error at: every rank up to 16, then 32, 64, ... and ``exact``.

    Every rank of a 3x3 or 5x5 convolution (exact rank at most 9 or 25) and of a linear layer's first
    16, where a separable form or a low-rank pair saves the most: with powers of two only, a layer
    within the limit at r = 7 would get r = 8, where a 3x3 convolution's separable form is larger
    than itself, and be left alone. Above 16 a rank's share of a linear layer's cost changes little.

    >>> output_error_ranks(9), output_error_ranks(100)
    ([1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 32, 64, 100])
    """
    ranks = list(range(1, min(exact, EVERY_RANK_UP_TO) + 1))
    rank = EVERY_RANK_UP_TO * 2
    while rank < exact:
        ranks.append(rank)
        rank *= 2
    return ranks if ranks[-1] == exact else [*ranks, exact]


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


def eligible_linears(
    model: nn.Module, min_weights: int, include: list[str], exclude: list[str]
) -> tuple[list[str], list[tuple[str, str]]]:
    """Names of the linear layers to split into low-rank pairs, and (name, reason) for each left alone.

    Eligible: an ``nn.Linear`` computing ``x W^T + b`` through its own forward, with at least
    ``min_weights`` weights, reachable under one name only, matched by ``include`` (when given) and by
    no ``exclude`` glob. The steps of a :class:`~sepconv.layers.LowRankLinear` are already low-rank,
    and ``nn.MultiheadAttention`` reads its ``out_proj`` weights itself (replacing the module would
    change nothing it computes).
    """
    counts = Counter(id(module) for _, module in model.named_modules(remove_duplicate=False))
    low_rank_steps = {
        id(step)
        for module in model.modules()
        if isinstance(module, LowRankLinear)
        for step in module.children()
    }
    read_directly = {
        id(module.out_proj) for module in model.modules() if isinstance(module, nn.MultiheadAttention)
    }
    chosen, skipped = [], []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        reason = None
        if id(module) in low_rank_steps:
            reason = "already low-rank"
        elif id(module) in read_directly:
            reason = "its weights are read by nn.MultiheadAttention, not through its forward"
        elif type(module).forward is not nn.Linear.forward:
            reason = f"{type(module).__name__} has its own forward"
        elif parametrize.is_parametrized(module):
            reason = "parametrized weight"
        elif module.in_features * module.out_features < min_weights:
            reason = f"{module.in_features}x{module.out_features} linear layer: too small"
        elif counts[id(module)] > 1:
            reason = "shared: reachable under more than one name"
        elif include and _first_match(name, include) is None:
            reason = "not included"
        elif (pattern := _first_match(name, exclude)) is not None:
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
    model: nn.Module,
    chosen: list[str],
    skipped: list[tuple[str, str]],
    ranks: Mapping[str, int],
    *,
    param: str = "depth_multiplier",
    kind: str = "nn.Conv2d",
) -> list[str]:
    """The layers a {name: rank} mapping (the option ``param``) names, each of which must be chosen.

    ``kind`` is what the layers are, for the message about a name no such layer has.
    """
    reasons = dict(skipped)
    for name in ranks:
        if name not in chosen:
            why = reasons.get(name, f"no {kind} has this name")
            raise ParameterError(
                f"{param} names layer {name!r}, which cannot be converted: {why}",
                param=param,
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
    return check_exact_ranks(exact, depth_multiplier, param="depth_multiplier", rule="min(out_channels, k*k)")


def check_exact_ranks(exact: Mapping[str, int], requested: Any, *, param: str, rule: str) -> str | None:
    """:func:`check_ranks` for any layer kind: ``exact`` maps each chosen layer to its exact rank.

    ``param`` names the option in the messages, ``rule`` says how the exact rank comes about.
    """
    if isinstance(requested, Mapping):
        for name, rank in requested.items():
            if name in exact and rank > exact[name]:
                raise ParameterError(
                    f"{param}[{name!r}]={rank} is above that layer's exact rank {exact[name]} "
                    f"({rule}, where the conversion is already exact): use at most {exact[name]}",
                    param=param,
                    mentions=(param,),
                )
        return None
    if requested == "auto" or not exact:
        return None
    largest = max(exact.values())
    if requested > largest:
        raise ParameterError(
            f"{param}={requested} is above the exact rank of every layer to convert (the "
            f"largest useful rank is {largest}: {rule}, where the conversion is already "
            f"exact); a larger rank only adds parameters: use at most {largest}",
            param=param,
        )
    capped = [f"{name} ({rank})" for name, rank in exact.items() if requested > rank]
    if not capped:
        return None
    return (
        f"{param}={requested} is above the exact rank of {len(capped)} layer(s), which use "
        f"their exact rank instead: {', '.join(capped[:5])}{', ...' if len(capped) > 5 else ''}"
    )


def larger_model_note(
    params_before: int, params_after: int, param: str, value: Any, layers: str
) -> str | None:
    """A note when a conversion made the model larger: at ``param=value`` its new ``layers`` save nothing."""
    if params_after <= params_before:
        return None
    return (
        f"the converted model has more parameters than the original ({params_after:,} > "
        f"{params_before:,}): at {param}={value!r} the {layers} save nothing; use a smaller {param}"
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
    name: str,
    depth_multiplier: Any,
    max_relative_error: float | None,
    errors: list[float] | None,
    output_errors: Mapping[int, float] | None = None,
    max_output_error: float | None = None,
) -> int:
    """The rank of layer ``name``: given, or under ``auto`` the smallest whose errors are small enough.

    ``errors`` are the weight errors at every rank (index r), ``output_errors`` the output errors at the
    ranks measured (:func:`output_error_ranks`). With ``max_output_error``, the smallest measured rank
    within it (and within ``max_relative_error`` too, when both are given); else the smallest rank within
    ``max_relative_error``. When none is, the exact rank.
    """
    if isinstance(depth_multiplier, Mapping):
        return int(depth_multiplier[name])
    if depth_multiplier != "auto":
        return int(depth_multiplier)
    assert errors is not None  # check_options: auto needs init="svd"
    exact = len(errors) - 1
    # Exact arithmetic gives error 0 at full rank; float64 rounding can leave ~1e-16 there.
    weight_ok = [max_relative_error is None or error <= max_relative_error + 1e-12 for error in errors]
    if max_output_error is None:
        return next((rank for rank in range(1, exact) if weight_ok[rank]), exact)
    assert output_errors is not None  # the caller measured them when max_output_error is given
    return next(
        (
            rank
            for rank in sorted(output_errors)
            if output_errors[rank] <= max_output_error + 1e-12 and weight_ok[min(rank, exact)]
        ),
        exact,
    )


def auto_kept_note(
    skipped: Sequence[tuple[str, str]],
    max_relative_error: float | None,
    max_output_error: float | None = None,
    *,
    param: str = "depth_multiplier",
    form: str = "separable form",
) -> str | None:
    """A note naming the layers ``auto`` left as they were (:func:`larger_than_original`), if any."""
    kept = [name for name, reason in skipped if reason.startswith("auto rank")]
    if not kept:
        return None
    limits = {"max_relative_error": max_relative_error, "max_output_error": max_output_error}
    given = {option: value for option, value in limits.items() if value is not None}
    return (
        f"{param}='auto' left {len(kept)} layer(s) as they were ({', '.join(kept[:5])}"
        f"{', ...' if len(kept) > 5 else ''}): at the rank "
        f"{' and '.join(f'{option}={value}' for option, value in given.items())} needs, "
        f"their {form} has more parameters than the original; allow a larger {' or '.join(given)}"
    )
