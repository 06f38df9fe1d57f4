"""Turn the standard convolutions of a trained model into depthwise-separable ones, keeping what they learned.

Each chosen k x k convolution becomes a :class:`~sepconv.layers.SeparableConv2d` with ``depth_multiplier
= r``: r depthwise filters per input channel, then a 1 x 1 mixing, from the rank-r SVD of each input
channel's filters (:mod:`sepconv.convert.svd`): the best rank-r approximation channel by channel, exact
once r >= min(C_out, k^2). At small r the cost falls to about that of a separable layer and the error
is largest in the directions the filters use least; fine-tuning recovers the rest.

This module runs the stages: :mod:`~sepconv.convert.select` chooses the layers and checks the ranks,
:mod:`~sepconv.convert.svd` computes the new weights, :mod:`~sepconv.convert.probe` runs the model once
for output sizes and errors, and :mod:`~sepconv.convert.report` describes the result.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from sepconv.checks import describe_integer
from sepconv.convert.output_errors import layer_output_errors
from sepconv.convert.probe import Plan, probe, resolve_input_size
from sepconv.convert.replacements import separable_like
from sepconv.convert.replay import register_transform
from sepconv.convert.report import ConversionReport, LayerConversion, layer_report
from sepconv.convert.select import (
    ConversionWarning,
    auto_kept_note,
    check_options,
    check_ranks,
    chosen_conv,
    eligible_layers,
    glob_patterns,
    larger_model_note,
    larger_than_original,
    named_layers,
    note,
    nothing_to_convert,
    output_error_ranks,
    rank_for,
    refuse_lazy,
    require_rank_memory,
    unmatched_patterns,
)
from sepconv.convert.svd import channel_svd, errors_by_rank, max_rank
from sepconv.errors import ParameterError
from sepconv.io.transforms import record_transform

__all__ = [
    "ConversionReport",
    "ConversionWarning",
    "LayerConversion",
    "recalibrate_batchnorm",
    "separable_like",
    "to_separable",
]


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
    max_output_error: float | None = None,
) -> tuple[nn.Module, ConversionReport]:
    """A copy of ``model`` with each standard convolution replaced by a :class:`SeparableConv2d`, and a report.

    Eligible: every ``nn.Conv2d`` (sepconv's ``Conv2d`` included) with ``groups == 1``, a kernel at least
    ``min_kernel_size`` wide on one axis, a qualified name that matches an ``include`` glob (when given)
    and no ``exclude`` glob (``"features.0.*"``). The new layer keeps stride, padding ('same' included),
    dilation, padding_mode, bias, device and dtype. ``init="svd"`` keeps the learned filters: the rank-r
    split of each input channel's filters (see the module docs), exact for r >= min(out_channels, k^2);
    ``"random"`` gives the layer its default initialisation. ``depth_multiplier`` is r for every layer,
    ``"auto"``, or ``{name: r}``. ``"auto"`` picks per layer the smallest r whose relative weight error
    is <= ``max_relative_error``, or, with ``max_output_error=e`` and a ``calibration`` batch, the
    smallest r whose relative output error on that batch is <= e (of every r up to 16, then 32, 64,
    ..., the exact one: :func:`~sepconv.convert.layer_output_errors`, what the layer computes on real
    data, which the weight error says little about); given both, both must hold. A rank above a
    layer's exact one only adds parameters: an integer r above every converted layer's exact rank, or
    a ``{name: r}`` above that layer's, is a ValueError; an integer r above some layers' exact rank is
    capped there, with a :class:`ConversionWarning`.
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
    check_options(depth_multiplier, init, min_kernel_size, max_relative_error, max_output_error, calibration)
    refuse_lazy(model)
    notes: list[str] = []
    include_patterns = glob_patterns("include", include)
    exclude_patterns = glob_patterns("exclude", exclude)
    for message in unmatched_patterns(model, include_patterns, exclude_patterns):
        note(notes, message)

    chosen, skipped = eligible_layers(model, min_kernel_size, include_patterns, exclude_patterns)
    if isinstance(depth_multiplier, Mapping):
        chosen = named_layers(model, chosen, skipped, depth_multiplier)
    if not chosen:
        raise ValueError(nothing_to_convert(model, skipped, include_patterns))
    note(notes, check_ranks(model, chosen, depth_multiplier))
    require_rank_memory(model, chosen, depth_multiplier)

    output_errors_by_rank = None
    if max_output_error is not None:
        assert calibration is not None  # check_options: max_output_error needs it
        candidates = {name: output_error_ranks(max_rank(chosen_conv(model, name))) for name in chosen}
        output_errors_by_rank = layer_output_errors(model, calibration, candidates)
    converted, plans, weight_errors = _convert_layers(
        model,
        chosen,
        skipped,
        depth_multiplier,
        init,
        (max_relative_error, max_output_error),
        output_errors_by_rank,
    )
    note(notes, auto_kept_note(skipped, max_relative_error, max_output_error))
    if getattr(model, "_sepconv_spec", None) is not None and plans:
        ranks = {name: rank for name, _, _, rank in plans}
        record_transform(converted, model, "to_separable", depth_multiplier=ranks, init="random")

    size = resolve_input_size(model, input_size, calibration)
    shapes, output_errors, problem = probe(model, plans, size, calibration)
    note(notes, problem)
    layers = tuple(
        layer_report(
            name,
            chosen_conv(model, name),
            rank,
            weight_errors[name],
            # A layer the probe never reached costs nothing in this forward pass (as summarize counts).
            None if shapes is None else [(shape[-2], shape[-1]) for shape in shapes.get(name, [])],
            output_errors.get(name),
        )
        for name, _, _, rank in plans
    )
    params_before = sum(p.numel() for p in model.parameters())
    params_after = sum(p.numel() for p in converted.parameters())
    note(
        notes,
        larger_model_note(
            params_before, params_after, "depth_multiplier", depth_multiplier, "separable layers"
        ),
    )
    report = ConversionReport.of(
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


def _convert_layers(
    model: nn.Module,
    chosen: list[str],
    skipped: list[tuple[str, str]],
    depth_multiplier: Any,
    init: str,
    limits: tuple[float | None, float | None],
    output_errors: Mapping[str, Mapping[int, float]] | None,
) -> tuple[nn.Module, list[Plan], dict[str, float | None]]:
    """A copy of ``model`` with the ``chosen`` layers replaced, what replaced them, and their weight errors.

    ``limits`` are ``auto``'s (max_relative_error, max_output_error), ``output_errors`` the layers'
    output errors by rank when the latter is given. A layer ``auto`` leaves as it was (its separable
    form would be larger) is added to ``skipped``.
    """
    max_relative_error, max_output_error = limits
    converted = copy.deepcopy(model)
    plans: list[Plan] = []
    weight_errors: dict[str, float | None] = {}
    for name in chosen:
        conv = chosen_conv(model, name)
        svd = channel_svd(conv) if init == "svd" else None
        errors = None if svd is None else errors_by_rank(svd[1])
        rank = rank_for(
            name,
            depth_multiplier,
            max_relative_error,
            errors,
            None if output_errors is None else output_errors[name],
            max_output_error,
        )
        rank = min(rank, max_rank(conv))  # above it a rank only adds parameters (capped above, with a note)
        if depth_multiplier == "auto" and (larger := larger_than_original(conv, rank)) is not None:
            skipped.append((name, larger))
            continue
        new_layer = separable_like(conv, rank, svd)
        setattr(new_layer, "_sepconv_name", name)  # noqa: B010 (Module.__setattr__ is typed for tensors)
        converted.set_submodule(name, new_layer)
        plans.append((name, conv, new_layer, rank))
        weight_errors[name] = None if errors is None else errors[min(rank, len(errors) - 1)]
    return converted, plans, weight_errors


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
        raise ParameterError(
            f"batch_size must be {describe_integer(2)} (BatchNorm needs 2 values), got {batch_size!r}",
            param="batch_size",
        )
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
    check_options(depth_multiplier, init, 2, None)
    chosen, skipped = eligible_layers(model, 2, [], [])
    converted = copy.deepcopy(model)
    for name in named_layers(model, chosen, skipped, depth_multiplier):
        conv = chosen_conv(model, name)
        new_layer = separable_like(conv, int(depth_multiplier[name]), None)
        setattr(new_layer, "_sepconv_name", name)  # noqa: B010 (Module.__setattr__ is typed for tensors)
        converted.set_submodule(name, new_layer)
    return converted
