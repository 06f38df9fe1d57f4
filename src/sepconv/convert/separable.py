"""Turn the standard convolutions of a trained model into depthwise-separable ones, keeping what they learned.

A k x k convolution from C_in to C_out channels is a sum over input channels: channel i is filtered by
the C_out x k^2 matrix W[:, i]. Its singular value decomposition U S V^T splits that filtering into
spatial filters (the rows of V^T, shared by all outputs) and a mixing of them (U S). Keeping the r
largest singular values of every channel gives r depthwise k x k filters per input channel followed
by a 1 x 1 mixing: a :class:`~sepconv.layers.SeparableConv2d` with ``depth_multiplier = r``. It is the
best rank-r approximation channel by channel (Eckart-Young), and exact once r >= min(C_out, k^2)
(Guo et al., "Network Decoupling", BMVC 2018). At small r the cost falls to about that of a separable
layer and the error is largest in the directions the filters use least; fine-tuning recovers the rest.
"""

from __future__ import annotations

import copy
import fnmatch
import math
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from sepconv.arithmetic import conv_macs, conv_params, separable_macs, separable_params
from sepconv.convert.fold import _LINEAR_CONV_FORWARDS
from sepconv.io.transforms import record_transform, register_transform
from sepconv.layers.conv import Conv2d as SepconvConv2d
from sepconv.layers.depthwise import DepthwiseConv2d, PointwiseConv2d
from sepconv.layers.separable import SeparableConv2d

__all__ = [
    "ConversionReport",
    "ConversionWarning",
    "LayerConversion",
    "recalibrate_batchnorm",
    "to_separable",
]

INITS = ("svd", "random")
# U (C_in, C_out, q), S (C_in, q), Vh (C_in, k^2, k^2): each input channel's filters, decomposed.
Decomposition = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class ConversionWarning(UserWarning):
    """A conversion setting that selected nothing or did less than asked: a pattern matching no layer, a
    rank capped at the exact one, layers ``auto`` left as they were, a result larger than the original."""


@dataclass(frozen=True)
class LayerConversion:
    """One converted convolution: its rank, its costs before and after, and how far the new one is off.

    weight_error: ||W - W_r||_F / ||W||_F of the rank-r weights (None for ``init="random"``);
    output_error: ||y_r - y||_F / ||y||_F of the layer's output on the calibration batch (None without one).
    max_rank: min(out_channels, k_h * k_w), the depth multiplier at which the conversion is exact.
    macs are per input image at the report's ``input_size`` (None when no input size is known).
    """

    name: str
    in_channels: int
    out_channels: int
    kernel_size: tuple[int, int]
    depth_multiplier: int
    max_rank: int
    params_before: int
    params_after: int
    macs_before: int | None
    macs_after: int | None
    weight_error: float | None
    output_error: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values."""
        return {
            "name": self.name,
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": list(self.kernel_size),
            "depth_multiplier": self.depth_multiplier,
            "max_rank": self.max_rank,
            "params_before": self.params_before,
            "params_after": self.params_after,
            "macs_before": self.macs_before,
            "macs_after": self.macs_after,
            "weight_error": self.weight_error,
            "output_error": self.output_error,
        }


@dataclass(frozen=True)
class ConversionReport:
    """What :func:`to_separable` did: one :class:`LayerConversion` per converted layer, and the totals.

    Totals are of the whole model (converted layers and the rest): ``total_params_*`` always,
    ``total_macs_*`` per input image at ``input_size`` when one is known. ``skipped`` names each
    ``nn.Conv2d`` left as it was, with the reason.
    """

    layers: tuple[LayerConversion, ...]
    skipped: tuple[tuple[str, str], ...]
    init: str
    input_size: tuple[int, ...] | None
    total_params_before: int
    total_params_after: int
    total_macs_before: int | None
    total_macs_after: int | None
    calibration_samples: int | None = None
    warnings: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """The report as one JSON-ready document (exact integers)."""
        return {
            "init": self.init,
            "input_size": None if self.input_size is None else list(self.input_size),
            "calibration_samples": self.calibration_samples,
            "units": {
                "macs": "multiply-accumulates per input image",
                "weight_error": "||W - W_r||_F / ||W||_F",
                "output_error": "||y_r - y||_F / ||y||_F on the calibration batch",
            },
            "layers": [layer.to_dict() for layer in self.layers],
            "skipped": [{"name": name, "reason": reason} for name, reason in self.skipped],
            "totals": {
                "params_before": self.total_params_before,
                "params_after": self.total_params_after,
                "macs_before": self.total_macs_before,
                "macs_after": self.total_macs_after,
            },
            "warnings": list(self.warnings),
        }

    def format_table(self) -> str:
        """A plain-text table, one row per converted layer, then the totals and the skipped layers."""
        headers = ["layer", "in", "out", "kernel", "r", "of", "params", "MACs", "weight err", "output err"]
        rows = [
            [
                layer.name,
                str(layer.in_channels),
                str(layer.out_channels),
                "x".join(map(str, layer.kernel_size)),
                str(layer.depth_multiplier),
                str(layer.max_rank),
                f"{_count(layer.params_before)} -> {_count(layer.params_after)}",
                _arrow(layer.macs_before, layer.macs_after),
                _percent(layer.weight_error),
                _percent(layer.output_error),
            ]
            for layer in self.layers
        ]
        widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
        lines = [
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
            for row in [headers, *rows]
        ]
        lines.insert(1, "  ".join("-" * width for width in widths))
        lines.append("")
        lines.append(
            f"total params: {_count(self.total_params_before)} -> {_count(self.total_params_after)} "
            f"({_ratio(self.total_params_after, self.total_params_before)})"
        )
        if self.total_macs_before is not None and self.total_macs_after is not None:
            size = "x".join(map(str, self.input_size or ()))
            lines.append(
                f"total MACs per {size} image: {_count(self.total_macs_before)} -> "
                f"{_count(self.total_macs_after)} ({_ratio(self.total_macs_after, self.total_macs_before)})"
            )
        if self.calibration_samples:
            lines.append(f"output errors on {self.calibration_samples} calibration images, layer by layer")
        if self.skipped:
            lines.append(f"left as they were: {_skipped_text(self.skipped)}")
        lines.extend(f"warning: {message}" for message in self.warnings)
        return "\n".join(lines) + "\n"

    def __str__(self) -> str:
        return self.format_table()


def to_separable(
    model: nn.Module,
    *,
    depth_multiplier: int | str | Mapping[str, int] = 1,
    init: str = "svd",
    min_kernel_size: int = 2,
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    max_relative_error: float | None = None,
    calibration: torch.Tensor | None = None,
    input_size: Sequence[int] | None = None,
) -> tuple[nn.Module, ConversionReport]:
    """A copy of ``model`` with each standard convolution replaced by a :class:`SeparableConv2d`, and a report.

    Eligible: every ``nn.Conv2d`` (sepconv's ``Conv2d`` included) with ``groups == 1``, a kernel at least
    ``min_kernel_size`` wide on one axis, a qualified name that matches an ``include`` glob (when given)
    and no ``exclude`` glob (``"features.0.*"``). The new layer keeps stride, padding ('same' included),
    dilation, padding_mode, bias, device and dtype. ``init="svd"`` keeps the learned filters: the rank-r
    split of each input channel's filters (see the module docs), exact for r >= min(out_channels, k^2);
    ``"random"`` gives the layer its default initialisation. ``depth_multiplier`` is r for every layer,
    ``"auto"`` (with ``max_relative_error=e``: per layer the smallest r whose relative weight error is
    <= e), or ``{name: r}``. A rank above a layer's exact one only adds parameters: an integer r above
    every converted layer's exact rank, or a ``{name: r}`` above that layer's, is a ValueError; an
    integer r above some layers' exact rank is capped there, with a :class:`ConversionWarning`.
    ``"auto"`` leaves a layer as it was (listed in ``skipped``, with a warning) when its separable form
    at the rank it needs has more parameters than the original, so it never makes a model larger; a
    fixed r that does gets a warning. ``calibration`` (a batch of inputs) adds each layer's output error;
    ``input_size`` (C, H, W; default the registered model's own) sets the image the MACs are counted for.
    ``model`` itself is not changed. A model built by ``create_model`` records the conversion, so
    ``save_model``/``load_model`` rebuild the converted architecture.

    >>> conv = nn.Conv2d(4, 8, 3, padding=1)
    >>> separable, report = to_separable(nn.Sequential(conv), depth_multiplier=8, input_size=(4, 6, 6))
    >>> type(separable[0]).__name__, report.layers[0].max_rank, report.layers[0].weight_error
    ('SeparableConv2d', 8, 0.0)
    >>> x = torch.randn(2, 4, 6, 6)
    >>> torch.allclose(separable(x), conv(x), atol=1e-5)
    True
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"to_separable expects an nn.Module for model, got {type(model).__name__}")
    _check_options(depth_multiplier, init, min_kernel_size, max_relative_error)
    lazy = [
        name for name, p in model.named_parameters() if isinstance(p, nn.parameter.UninitializedParameter)
    ]
    if lazy:
        raise ValueError(
            f"{type(model).__name__} has uninitialized (lazy) parameters ({', '.join(lazy[:3])}): run it once "
            f"on an input before converting it"
        )
    include_patterns = _patterns("include", include)
    exclude_patterns = _patterns("exclude", exclude)
    notes = _unmatched_patterns(model, include_patterns, exclude_patterns)
    for message in notes:
        warnings.warn(message, ConversionWarning, stacklevel=2)

    chosen, skipped = _select(model, min_kernel_size, include_patterns, exclude_patterns)
    if isinstance(depth_multiplier, Mapping):
        chosen = _named_layers(model, chosen, skipped, depth_multiplier)
    if not chosen:
        raise ValueError(_nothing_to_convert(model, skipped, include_patterns))

    capped = _check_ranks(model, chosen, depth_multiplier)
    if capped:
        notes.append(capped)
        warnings.warn(capped, ConversionWarning, stacklevel=2)
    _require_memory(model, chosen, depth_multiplier)

    converted = copy.deepcopy(model)
    plans, weight_errors = [], {}
    for name in chosen:
        conv = model.get_submodule(name)
        svd = _channel_svd(conv) if init == "svd" else None
        errors = None if svd is None else _errors_by_rank(svd[1])
        rank = _rank_for(name, depth_multiplier, max_relative_error, errors)
        rank = min(rank, _max_rank(conv))  # above it a rank only adds parameters (capped above, with a note)
        if depth_multiplier == "auto" and (larger := _larger_than_original(conv, rank)) is not None:
            skipped.append((name, larger))
            continue
        new_layer = _separable_like(conv, rank, svd)
        new_layer._sepconv_name = name
        converted.set_submodule(name, new_layer)
        plans.append((name, conv, new_layer, rank))
        weight_errors[name] = None if errors is None else errors[min(rank, len(errors) - 1)]

    kept = [name for name, reason in skipped if reason.startswith("auto rank")]
    if kept:
        message = (
            f"depth_multiplier='auto' left {len(kept)} layer(s) as they were ({', '.join(kept[:5])}"
            f"{', ...' if len(kept) > 5 else ''}): at the rank max_relative_error={max_relative_error} needs, "
            "their separable form has more parameters than the original; allow a larger max_relative_error"
        )
        notes.append(message)
        warnings.warn(message, ConversionWarning, stacklevel=2)
    if getattr(model, "_sepconv_spec", None) is not None and plans:
        ranks = {name: rank for name, _, _, rank in plans}
        record_transform(converted, model, "to_separable", depth_multiplier=ranks, init="random")

    size = _input_size(model, input_size, calibration)
    spatial, output_errors, problem = _probe(model, plans, size, calibration)
    if problem is not None:
        warnings.warn(problem, ConversionWarning, stacklevel=2)
        notes.append(problem)
    layers = tuple(
        _layer_report(
            name,
            conv,
            rank,
            weight_errors[name],
            # A layer the probe never reached costs nothing in this forward pass (as summarize counts).
            None if spatial is None else spatial.get(name, []),
            output_errors.get(name),
        )
        for name, conv, _, rank in plans
    )
    total_macs_before = total_macs_after = None
    if size is not None and all(layer.macs_before is not None for layer in layers):
        from sepconv.analysis import summarize

        total_macs_before = summarize(model, (1, *size)).total_macs
        total_macs_after = total_macs_before + sum(layer.macs_after - layer.macs_before for layer in layers)  # type: ignore[operator]
    params_before = sum(p.numel() for p in model.parameters())
    params_after = sum(p.numel() for p in converted.parameters())
    if params_after > params_before:
        message = (
            f"the converted model has more parameters than the original ({params_after:,} > "
            f"{params_before:,}): at depth_multiplier={depth_multiplier!r} the separable layers save nothing; "
            "use a smaller depth_multiplier"
        )
        notes.append(message)
        warnings.warn(message, ConversionWarning, stacklevel=2)
    report = ConversionReport(
        layers=layers,
        skipped=tuple(skipped),
        init=init,
        input_size=size,
        total_params_before=params_before,
        total_params_after=params_after,
        total_macs_before=total_macs_before,
        total_macs_after=total_macs_after,
        calibration_samples=None if calibration is None else int(calibration.shape[0]),
        warnings=tuple(notes),
    )
    return converted, report


def recalibrate_batchnorm(model: nn.Module, images: torch.Tensor, *, batch_size: int = 64) -> nn.Module:
    """Re-estimate every BatchNorm's running statistics of ``model`` on ``images``, in place; returns ``model``.

    A converted layer computes something slightly different from the one it replaced, so the running
    statistics of the BatchNorm after it describe outputs that no longer occur. Recomputing them on a
    few hundred training images (a cumulative average, :func:`torch.optim.swa_utils.update_bn`) makes
    a converted model usable without fine-tuning: on the demo's trained ``standard_cnn`` (stem kept)
    it lifted test accuracy from 10% to 59% at r = 1 and from 19% to 90% at r = 2. Fine-tuning
    re-estimates the statistics anyway (training normalizes with batch statistics). Use training
    images, not the images you will evaluate on. The root module's train/eval mode is restored.
    """
    from torch.optim.swa_utils import update_bn

    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[0] < 2:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a batch of at least 2 images (N, C, H, W), got {shape}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 2:
        raise ValueError(f"batch_size must be an integer >= 2 (BatchNorm needs 2 values), got {batch_size!r}")
    parameter = next(model.parameters(), None)
    if parameter is not None:
        images = images.to(parameter.device, parameter.dtype)
    batches = [batch for batch in torch.split(images, batch_size) if batch.shape[0] > 1]
    with torch.no_grad():
        update_bn(batches, model)
    return model


@register_transform("to_separable")
def _replay(model: nn.Module, *, depth_multiplier: Mapping[str, int], init: str = "random") -> nn.Module:
    """The recorded step of a model file: the same layers, the same ranks, weights to be loaded after."""
    if init != "random":
        raise ValueError(
            f"a recorded to_separable step has init='random' (weights come from the file), got {init!r}"
        )
    _check_options(depth_multiplier, init, 2, None)
    chosen, skipped = _select(model, 2, [], [])
    converted = copy.deepcopy(model)
    for name in _named_layers(model, chosen, skipped, depth_multiplier):
        conv = model.get_submodule(name)
        new_layer = _separable_like(conv, int(depth_multiplier[name]), None)
        new_layer._sepconv_name = name
        converted.set_submodule(name, new_layer)
    return converted


# --- choosing the layers ------------------------------------------------------------------------


def _check_options(depth_multiplier: Any, init: str, min_kernel_size: Any, max_relative_error: Any) -> None:
    if init not in INITS:
        raise ValueError(f"init must be one of {', '.join(INITS)}; got {init!r}")
    if isinstance(min_kernel_size, bool) or not isinstance(min_kernel_size, int) or min_kernel_size < 2:
        raise ValueError(
            f"min_kernel_size must be an integer >= 2 (a 1x1 convolution is already pointwise), got {min_kernel_size!r}"
        )
    if isinstance(depth_multiplier, Mapping):
        for name, rank in depth_multiplier.items():
            if not isinstance(name, str) or isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
                raise ValueError(
                    f"depth_multiplier must map layer names to integers >= 1, got {name!r}: {rank!r}"
                )
    elif depth_multiplier == "auto":
        if max_relative_error is None:
            raise ValueError(
                "depth_multiplier='auto' needs max_relative_error (the largest relative weight error a "
                "layer may have, e.g. 0.1)"
            )
        if init != "svd":
            raise ValueError(
                f"depth_multiplier='auto' picks ranks from the SVD, so init must be 'svd', got {init!r}"
            )
    elif isinstance(depth_multiplier, bool) or not isinstance(depth_multiplier, int) or depth_multiplier < 1:
        raise ValueError(
            f"depth_multiplier must be an integer >= 1, 'auto' or a {{layer name: integer}} dict, got {depth_multiplier!r}"
        )
    if max_relative_error is not None:
        if depth_multiplier != "auto":
            raise ValueError(
                f"max_relative_error applies with depth_multiplier='auto' only, got depth_multiplier={depth_multiplier!r}"
            )
        valid = isinstance(max_relative_error, int | float) and not isinstance(max_relative_error, bool)
        if not valid or not math.isfinite(max_relative_error) or not 0 <= max_relative_error <= 1:
            raise ValueError(f"max_relative_error must be a number in [0, 1], got {max_relative_error!r}")


def _patterns(name: str, value: str | Sequence[str] | None) -> list[str]:
    if value is None:
        return []
    patterns = [value] if isinstance(value, str) else list(value)
    for pattern in patterns:
        if not isinstance(pattern, str) or not pattern:
            raise ValueError(
                f"{name} must be a glob pattern or a list of them (e.g. 'features.*'), got {value!r}"
            )
    return patterns


def _matches(name: str, patterns: Iterable[str]) -> str | None:
    return next((pattern for pattern in patterns if fnmatch.fnmatchcase(name, pattern)), None)


def _unmatched_patterns(model: nn.Module, include: list[str], exclude: list[str]) -> list[str]:
    names = [name for name, _ in model.named_modules() if name]
    return [
        f"{kind} pattern {pattern!r} matches no layer of {type(model).__name__}"
        for kind, patterns in (("include", include), ("exclude", exclude))
        for pattern in patterns
        if not any(fnmatch.fnmatchcase(name, pattern) for name in names)
    ]


def _select(
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
        if reason is None and include and _matches(name, include) is None:
            reason = "not included"
        if reason is None and (pattern := _matches(name, exclude)) is not None:
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


def _named_layers(
    model: nn.Module, chosen: list[str], skipped: list[tuple[str, str]], ranks: Mapping[str, int]
) -> list[str]:
    """The layers a {name: rank} mapping names, each of which must be an eligible convolution."""
    reasons = dict(skipped)
    for name in ranks:
        if name not in chosen:
            why = reasons.get(name, "no nn.Conv2d has this name")
            raise ValueError(f"depth_multiplier names layer {name!r}, which cannot be converted: {why}")
    return [name for name in chosen if name in ranks]


def _nothing_to_convert(model: nn.Module, skipped: list[tuple[str, str]], include: list[str]) -> str:
    if not skipped:
        return f"{type(model).__name__} has no nn.Conv2d to convert to a separable convolution"
    reasons = Counter(reason for _, reason in skipped)
    listed = ", ".join(f"{count} {reason}" for reason, count in reasons.most_common(4))
    return (
        f"{type(model).__name__} has no convolution to convert: its {len(skipped)} nn.Conv2d layers are "
        f"grouped, 1x1, excluded or otherwise ineligible ({listed})"
        + (f"; include patterns: {', '.join(include)}" if include else "")
    )


# --- the maths ----------------------------------------------------------------------------------


def _channel_svd(conv: nn.Conv2d) -> Decomposition:
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


def _errors_by_rank(singular_values: torch.Tensor) -> list[float]:
    """Relative Frobenius error of the whole layer at r = 0, 1, ..., q (singular values: C_in x q)."""
    energy = singular_values.square().sum(dim=0)  # per rank, over input channels
    total = float(energy.sum())
    if total == 0.0:
        return [0.0] * (energy.numel() + 1)
    left = [*energy.flip(0).cumsum(0).flip(0).tolist(), 0.0]  # energy from rank j on
    return [math.sqrt(max(value, 0.0) / total) for value in left]


def _max_rank(conv: nn.Conv2d) -> int:
    return min(conv.out_channels, conv.kernel_size[0] * conv.kernel_size[1])


def _check_ranks(model: nn.Module, chosen: list[str], depth_multiplier: Any) -> str | None:
    """Refuse ranks above the exact one where they only add parameters; a note for the layers capped.

    At r = min(C_out, k^2) the conversion is already exact: a larger r adds filters whose mixing is
    zero, a model several times larger that computes the same. A mapping that asks that of a layer is
    refused; one integer r above the exact rank of *every* layer is refused; one above the exact rank
    of some layers only (those with few output channels) is capped there, and the note says which.
    """
    exact = {name: _max_rank(model.get_submodule(name)) for name in chosen}
    if isinstance(depth_multiplier, Mapping):
        for name, rank in depth_multiplier.items():
            if name in exact and rank > exact[name]:
                raise ValueError(
                    f"depth_multiplier[{name!r}]={rank} is above that layer's exact rank {exact[name]} "
                    f"(min(out_channels, k*k), where the conversion is already exact): use at most {exact[name]}"
                )
        return None
    if depth_multiplier == "auto" or not exact:
        return None
    largest = max(exact.values())
    if depth_multiplier > largest:
        raise ValueError(
            f"depth_multiplier={depth_multiplier} is above the exact rank of every layer to convert (the "
            f"largest useful rank is {largest}: min(out_channels, k*k), where the conversion is already "
            f"exact); a larger rank only adds parameters: use at most {largest}"
        )
    capped = [f"{name} ({rank})" for name, rank in exact.items() if depth_multiplier > rank]
    if not capped:
        return None
    return (
        f"depth_multiplier={depth_multiplier} is above the exact rank of {len(capped)} layer(s), which use "
        f"their exact rank instead: {', '.join(capped[:5])}{', ...' if len(capped) > 5 else ''}"
    )


def _larger_than_original(conv: nn.Conv2d, rank: int) -> str | None:
    """Why ``conv`` stays as it is under ``auto``: its separable form at ``rank`` has more parameters."""
    kernel = (int(conv.kernel_size[0]), int(conv.kernel_size[1]))
    bias = conv.bias is not None
    before = conv_params(conv.in_channels, conv.out_channels, kernel, bias=bias)
    after = separable_params(conv.in_channels, conv.out_channels, kernel, rank, bias=bias)
    # Per layer MACs scale as parameters do (both are weights x output pixels), so one test covers both.
    if after <= before:
        return None
    return f"auto rank {rank} has more parameters, {after:,} > {before:,}"


def _require_memory(model: nn.Module, chosen: list[str], depth_multiplier: Any) -> None:
    """Refuse ranks whose new layers cannot fit in memory, before any is built.

    The estimate counts the copy of the model and the new layers' weights at the requested ranks (capped
    at the exact rank, as built); the SVD's workspace and the calibration pass are left out.
    """
    from sepconv.machine import require_memory

    if depth_multiplier == "auto":
        return  # ranks come from the SVD, at most the exact rank: never beyond the layers' own scale
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    for name in chosen:
        conv = model.get_submodule(name)
        rank = depth_multiplier[name] if isinstance(depth_multiplier, Mapping) else depth_multiplier
        kernel = (int(conv.kernel_size[0]), int(conv.kernel_size[1]))
        count = separable_params(conv.in_channels, conv.out_channels, kernel, min(rank, _max_rank(conv)))
        weights += count * conv.weight.element_size()
    value = "{...}" if isinstance(depth_multiplier, Mapping) else depth_multiplier
    require_memory("depth_multiplier", value, weights, what="the copy of the model and its separable layers")


def _rank_for(
    name: str, depth_multiplier: Any, max_relative_error: float | None, errors: list[float] | None
) -> int:
    if isinstance(depth_multiplier, Mapping):
        return int(depth_multiplier[name])
    if depth_multiplier != "auto":
        return int(depth_multiplier)
    assert errors is not None  # _check_options: auto needs init="svd"
    # Exact arithmetic gives error 0 at full rank; float64 rounding can leave ~1e-16 there.
    return next(
        (rank for rank in range(1, len(errors)) if errors[rank] <= max_relative_error + 1e-12),  # type: ignore[operator]
        len(errors) - 1,
    )


def _separable_like(conv: nn.Conv2d, rank: int, svd: Decomposition | None) -> SeparableConv2d:
    """A SeparableConv2d with ``conv``'s geometry and ``rank`` filters per input channel.

    Its weights are the rank-``rank`` split of ``svd`` (:func:`_channel_svd` of ``conv``), or the
    layer's own random initialisation when ``svd`` is None.
    """
    padding = conv.padding_spec if isinstance(conv, SepconvConv2d) else conv.padding
    layer = SeparableConv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=padding if isinstance(padding, str) else tuple(padding),
        dilation=conv.dilation,
        depth_multiplier=rank,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )
    layer.train(conv.training)
    if svd is not None:
        _load_svd(layer, conv, rank, svd)
    for parameter in layer.parameters():
        parameter.requires_grad_(conv.weight.requires_grad)
    return layer


@torch.no_grad()
def _load_svd(layer: SeparableConv2d, conv: nn.Conv2d, rank: int, svd: Decomposition) -> None:
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
    if conv.bias is not None:
        layer.pointwise.bias.copy_(conv.bias.detach())


# --- the report ---------------------------------------------------------------------------------


def _input_size(
    model: nn.Module, input_size: Sequence[int] | None, calibration: torch.Tensor | None
) -> tuple[int, ...] | None:
    if input_size is not None:
        size = tuple(input_size)
        if len(size) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in size):
            raise ValueError(
                f"input_size must be (channels, height, width) of positive integers, got {input_size!r}"
            )
        return size
    if calibration is not None:
        if not isinstance(calibration, torch.Tensor) or calibration.dim() != 4 or calibration.shape[0] < 1:
            raise ValueError(
                f"calibration must be a batch of images (N, C, H, W), got "
                f"{tuple(calibration.shape) if isinstance(calibration, torch.Tensor) else type(calibration).__name__}"
            )
        return tuple(int(v) for v in calibration.shape[1:])
    if getattr(model, "_sepconv_spec", None) is not None:
        from sepconv.models import default_input_size

        return default_input_size(model)
    return None


def _probe(
    model: nn.Module,
    plans: list[tuple[str, nn.Conv2d, SeparableConv2d, int]],
    size: tuple[int, ...] | None,
    calibration: torch.Tensor | None,
) -> tuple[dict[str, list[tuple[int, int]]] | None, dict[str, float], str | None]:
    """Each converted layer's output size at every call, on a calibration batch its output error, and a problem.

    Without a calibration batch, a model that cannot run on a plain (1, C, H, W) input (several
    inputs, a detection model's image list) is no reason to refuse the conversion: its MACs are left
    unknown, and the problem is returned for the report. A calibration batch the model cannot take is
    the caller's error.
    """
    if size is None:
        return None, {}, None
    spatial: dict[str, list[tuple[int, int]]] = {}
    sums: dict[str, list[float]] = {}

    def watch(name: str, new_layer: SeparableConv2d) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> None:
            spatial.setdefault(name, []).append((int(output.shape[-2]), int(output.shape[-1])))
            if calibration is not None:
                approx = new_layer(args[0])
                difference, reference = sums.setdefault(name, [0.0, 0.0]), output.double()
                difference[0] += float((approx.double() - reference).square().sum())
                difference[1] += float(reference.square().sum())

        return hook

    parameter = next(model.parameters())
    if calibration is not None:
        inputs = calibration.to(parameter.device, parameter.dtype)
    else:
        inputs = torch.zeros(1, *size, device=parameter.device, dtype=parameter.dtype)
    was_training = {module: module.training for module in model.modules()}
    layer_modes = {id(layer): layer.training for _, _, layer, _ in plans}
    handles = [conv.register_forward_hook(watch(name, layer)) for name, conv, layer, _ in plans]
    try:
        model.eval()
        for _, _, layer, _ in plans:
            layer.eval()
        with torch.no_grad():
            model(inputs)
    except Exception as error:
        message = " ".join(str(error).split())[:300] or type(error).__name__
        if calibration is not None:
            raise ValueError(
                f"calibration: {type(model).__name__} cannot run on the calibration batch of shape "
                f"{tuple(calibration.shape)}: {message}"
            ) from error
        return (
            None,
            {},
            (
                f"{type(model).__name__} did not run on a {'x'.join(map(str, size))} input ({message}); "
                f"MACs are left unknown (give input_size or a calibration batch that fits)"
            ),
        )
    finally:
        for handle in handles:
            handle.remove()
        for module, mode in was_training.items():
            module.training = mode
        for _, _, layer, _ in plans:
            layer.train(layer_modes[id(layer)])
    errors = {name: math.sqrt(d / r) if r > 0 else 0.0 for name, (d, r) in sums.items()}
    return spatial, errors, None


def _layer_report(
    name: str,
    conv: nn.Conv2d,
    rank: int,
    weight_error: float | None,
    spatial: list[tuple[int, int]] | None,
    output_error: float | None,
) -> LayerConversion:
    kernel = (int(conv.kernel_size[0]), int(conv.kernel_size[1]))
    bias = conv.bias is not None
    return LayerConversion(
        name=name,
        in_channels=conv.in_channels,
        out_channels=conv.out_channels,
        kernel_size=kernel,
        depth_multiplier=rank,
        max_rank=_max_rank(conv),
        params_before=conv_params(conv.in_channels, conv.out_channels, kernel, bias=bias),
        params_after=separable_params(conv.in_channels, conv.out_channels, kernel, rank, bias=bias),
        # A layer called more than once (a loop in forward) costs its MACs at every call.
        macs_before=None
        if spatial is None
        else sum(conv_macs(conv.in_channels, conv.out_channels, kernel, size) for size in spatial),
        macs_after=None
        if spatial is None
        else sum(separable_macs(conv.in_channels, conv.out_channels, kernel, size, rank) for size in spatial),
        weight_error=weight_error,
        output_error=output_error,
    )


def _skipped_text(skipped: Sequence[tuple[str, str]]) -> str:
    """Each layer by name when there are a few; counts per reason when there are many (a MobileNet's 52)."""
    if len(skipped) <= 6:
        return ", ".join(f"{name} ({reason})" for name, reason in skipped)
    reasons = Counter(reason for _, reason in skipped)
    return f"{len(skipped)} convolutions: " + ", ".join(
        f"{count} {reason}" for reason, count in reasons.most_common()
    )


def _count(value: int | None) -> str:
    if value is None:
        return "?"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{unit}"
    return str(value)


def _arrow(before: int | None, after: int | None) -> str:
    return "?" if before is None or after is None else f"{_count(before)} -> {_count(after)}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def _ratio(after: int, before: int) -> str:
    return f"x{after / before:.3f}" if before else "n/a"
