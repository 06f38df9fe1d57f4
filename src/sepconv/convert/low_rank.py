"""Split the large linear layers of a trained model into low-rank pairs, keeping what they learned.

Each chosen ``nn.Linear`` becomes a :class:`~sepconv.layers.LowRankLinear` of rank r: a projection onto
the r strongest singular directions of its weight, then the rest of the matrix on those directions
(:func:`~sepconv.convert.svd.linear_svd`): the best rank-r approximation (Eckart-Young), exact at
r = min(in, out). It does less work than the original while r (in + out) < in x out, which on a
classifier at batch 1 (weights read once per image) is most of a CNN's time. Siblings of
:func:`~sepconv.convert.to_separable`: the same layer selection by name patterns, the same ``auto``
rules, a report of the same shape, and the same record in the model's recipe, replayed on load.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from sepconv.checks import check_int_sequence, describe_integer
from sepconv.convert.output_errors import layer_output_errors
from sepconv.convert.probe import Plan, probe
from sepconv.convert.replacements import low_rank_like
from sepconv.convert.replay import register_transform
from sepconv.convert.report import LowRankLayer, LowRankReport, low_rank_layer_report
from sepconv.convert.select import (
    MIN_LINEAR_WEIGHTS,
    auto_kept_note,
    check_exact_ranks,
    check_rank_options,
    eligible_linears,
    glob_patterns,
    larger_model_note,
    named_layers,
    note,
    output_error_ranks,
    rank_for,
    refuse_lazy,
    unmatched_patterns,
)
from sepconv.convert.svd import (
    linear_errors_by_rank,
    linear_max_rank,
    linear_svd,
)
from sepconv.errors import ParameterError
from sepconv.io.transforms import record_transform

__all__ = ["MIN_LINEAR_WEIGHTS", "LowRankLayer", "LowRankReport", "low_rank_like", "to_low_rank"]


def to_low_rank(
    model: nn.Module,
    *,
    rank: int | str | Mapping[str, int],
    init: str = "svd",
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    min_weights: int = MIN_LINEAR_WEIGHTS,
    max_relative_error: float | None = None,
    max_output_error: float | None = None,
    calibration: torch.Tensor | None = None,
    input_size: Sequence[int] | None = None,
) -> tuple[nn.Module, LowRankReport]:
    """A copy of ``model`` with each large ``nn.Linear`` replaced by a :class:`~sepconv.layers.LowRankLinear`,
    and a report.

    Chosen: every ``nn.Linear`` with at least ``min_weights`` weights (256 KB of fp32 by default: below
    that a pair has nothing to win), reachable under one name, matching an ``include`` glob (when given)
    and no ``exclude`` glob; a ``{name: r}`` mapping names its layers itself, of any size. ``rank`` is r
    for every chosen layer, ``{name: r}``, or ``"auto"``: per layer the smallest r whose relative
    weight error is <= ``max_relative_error``, or the smallest r (of every one up to 16, then 32, 64,
    ..., the exact one) whose relative output error on ``calibration`` is <= ``max_output_error``
    (both, when both are given). A rank above
    a layer's exact one, min(in, out), only adds weights: in a mapping it is a ValueError, as one
    integer above every layer's; an integer above some layers' is capped there, with a
    :class:`~sepconv.convert.ConversionWarning`. ``"auto"`` leaves a layer whose pair would have more
    weights than itself as it was. ``calibration`` (a batch of inputs) adds each layer's output error;
    ``input_size`` (one input's shape, default the calibration batch's, else the registered model's)
    sets the input the MACs are counted for. ``model`` is not changed; a model built by
    ``create_model`` records the step, so ``save_model``/``load_model`` rebuild it.

    >>> linear = nn.Linear(512, 256)
    >>> model, report = to_low_rank(nn.Sequential(linear), rank=256, input_size=(512,))
    >>> type(model[0]).__name__, report.layers[0].max_rank, report.layers[0].weight_error < 1e-6
    ('LowRankLinear', 256, True)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"to_low_rank expects an nn.Module for model, got {type(model).__name__}")
    check_rank_options("rank", rank, init, max_relative_error, max_output_error, calibration)
    if isinstance(min_weights, bool) or not isinstance(min_weights, int) or min_weights < 0:
        raise ParameterError(
            f"min_weights must be {describe_integer(0)}, got {min_weights!r}", param="min_weights"
        )
    refuse_lazy(model)
    notes: list[str] = []
    include_patterns = glob_patterns("include", include)
    exclude_patterns = glob_patterns("exclude", exclude)
    for message in unmatched_patterns(model, include_patterns, exclude_patterns):
        note(notes, message)

    by_name = isinstance(rank, Mapping)
    chosen, skipped = eligible_linears(
        model, 0 if by_name else min_weights, include_patterns, exclude_patterns
    )
    if isinstance(rank, Mapping):
        chosen = named_layers(model, chosen, skipped, rank, param="rank", kind="nn.Linear")
    if not chosen:
        raise ValueError(_nothing_to_split(model, skipped, min_weights))
    exact = {name: linear_max_rank(_linear(model, name)) for name in chosen}
    note(notes, check_exact_ranks(exact, rank, param="rank", rule="min(in_features, out_features)"))
    output_errors_by_rank = None
    if max_output_error is not None:
        assert calibration is not None  # check_rank_options: max_output_error needs it
        candidates = {name: output_error_ranks(exact[name]) for name in chosen}
        output_errors_by_rank = layer_output_errors(model, calibration, candidates)

    converted = copy.deepcopy(model)
    plans: list[Plan] = []
    weight_errors: dict[str, float | None] = {}
    for name in chosen:
        linear = _linear(model, name)
        svd = linear_svd(linear) if init == "svd" else None
        errors = None if svd is None else linear_errors_by_rank(svd)
        layer_outputs = None if output_errors_by_rank is None else output_errors_by_rank[name]
        chosen_rank = rank_for(name, rank, max_relative_error, errors, layer_outputs, max_output_error)
        chosen_rank = min(chosen_rank, exact[name])  # capped, with the note above
        if rank == "auto" and (larger := _larger_than_original(linear, chosen_rank)) is not None:
            skipped.append((name, larger))
            continue
        new_layer = low_rank_like(linear, chosen_rank, init=init, svd=svd)
        converted.set_submodule(name, new_layer)
        plans.append((name, linear, new_layer, chosen_rank))
        weight_errors[name] = None if errors is None else errors[chosen_rank]
    note(
        notes,
        auto_kept_note(skipped, max_relative_error, max_output_error, param="rank", form="low-rank pair"),
    )
    if getattr(model, "_sepconv_spec", None) is not None and plans:
        record_transform(converted, model, "to_low_rank", rank={name: r for name, _, _, r in plans})

    params_before = sum(p.numel() for p in model.parameters())
    params_after = sum(p.numel() for p in converted.parameters())
    note(notes, larger_model_note(params_before, params_after, "rank", rank, "low-rank pairs"))
    size = _input_size(model, input_size, calibration)
    shapes, output_errors, problem = probe(model, plans, size, calibration)
    note(notes, problem)
    layers = tuple(
        low_rank_layer_report(
            name,
            _linear(model, name),
            layer_rank,
            weight_errors[name],
            # rows per input: the output's size without batch and features (1 for a flat input)
            None if shapes is None else [math.prod(shape[:-1]) for shape in shapes.get(name, [])],
            output_errors.get(name),
        )
        for name, _, _, layer_rank in plans
    )
    report = LowRankReport.of(
        model,
        converted,
        layers,
        skipped=skipped,
        init=init,
        input_size=size,
        calibration=calibration,
        notes=notes,
    )
    return converted, report


def _linear(model: nn.Module, name: str) -> nn.Linear:
    """The layer ``name`` of ``model``, one :func:`eligible_linears` chose (so an ``nn.Linear``)."""
    layer = model.get_submodule(name)
    if not isinstance(layer, nn.Linear):
        raise TypeError(f"{name} is a {type(layer).__name__}, not one of the nn.Linear layers chosen")
    return layer


def _larger_than_original(linear: nn.Linear, rank: int) -> str | None:
    """Why ``linear`` stays as it is under ``auto``: its pair at ``rank`` has more weights (and MACs)."""
    before = linear.in_features * linear.out_features
    after = rank * (linear.in_features + linear.out_features)
    if after <= before:
        return None
    return f"auto rank {rank} has more parameters, {after:,} > {before:,}"


def _nothing_to_split(model: nn.Module, skipped: list[tuple[str, str]], min_weights: int) -> str:
    """Why no linear layer of ``model`` was chosen, with the reasons of those left alone."""
    if not skipped:
        return f"{type(model).__name__} has no nn.Linear to split into a low-rank pair"
    reasons = sorted({reason for _, reason in skipped})
    return (
        f"{type(model).__name__} has no linear layer to split: its {len(skipped)} nn.Linear layers are "
        f"smaller than min_weights={min_weights:,}, excluded or otherwise ineligible ({'; '.join(reasons[:4])})"
    )


def _input_size(
    model: nn.Module, input_size: Sequence[int] | None, calibration: torch.Tensor | None
) -> tuple[int, ...] | None:
    """One input's shape, MACs are counted at: given, else the calibration batch's, else the registered model's."""
    if input_size is not None:
        return tuple(check_int_sequence("input_size", input_size, minimum=1))
    if calibration is not None:
        if not isinstance(calibration, torch.Tensor) or calibration.dim() < 2 or calibration.shape[0] < 1:
            shape = (
                tuple(calibration.shape)
                if isinstance(calibration, torch.Tensor)
                else type(calibration).__name__
            )
            raise ValueError(f"calibration must be a batch of inputs (N, ...), got {shape}")
        return tuple(int(size) for size in calibration.shape[1:])
    if getattr(model, "_sepconv_spec", None) is not None:
        from sepconv.models import default_input_size

        return default_input_size(model)
    return None


@register_transform("to_low_rank")
def _replay(model: nn.Module, *, rank: Mapping[str, int]) -> nn.Module:
    """The recorded step of a model file: the same layers at the same ranks, weights to be loaded after."""
    check_rank_options("rank", rank, "random", None)
    if not isinstance(rank, Mapping):
        raise ValueError(f"a recorded to_low_rank step maps layer names to ranks, got {rank!r}")
    chosen, skipped = eligible_linears(model, 0, [], [])
    converted = copy.deepcopy(model)
    for name in named_layers(model, chosen, skipped, rank, param="rank", kind="nn.Linear"):
        converted.set_submodule(name, low_rank_like(_linear(model, name), int(rank[name]), init="random"))
    return converted
