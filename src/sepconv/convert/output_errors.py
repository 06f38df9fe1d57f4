"""How far each candidate replacement of a layer is off on real data: its relative output error by rank.

The weight error of a rank-r split says little about what the network loses: a direction the filters
barely use may be one the data never excites, or the one it always does. The output error measures
it on the user's images instead. One forward pass of the original model, with a hook on each layer
asked about, hands every candidate (the separable convolution or low-rank pair at each rank, built
from the layer's SVD, computed once per layer) the very input the original layer sees, and compares
their outputs. ``to_separable``/``to_low_rank`` with ``max_output_error`` and the optimizer's
sensitivity table read these numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import torch
from torch import nn

from sepconv.checks import describe_integer
from sepconv.convert.probe import relative_output_error, squared_norms
from sepconv.convert.replacements import low_rank_like, separable_like
from sepconv.convert.select import eligible_layers, eligible_linears
from sepconv.convert.svd import channel_svd, linear_max_rank, linear_svd, max_rank
from sepconv.errors import ParameterError

__all__ = ["layer_output_errors", "run_original"]

# Builds the replacement of one layer at a rank; the layer's decomposition is computed on first use.
Builder = Callable[[int], nn.Module]


def layer_output_errors(
    model: nn.Module, calibration: torch.Tensor, ranks: Mapping[str, Sequence[int]]
) -> dict[str, dict[int, float]]:
    """``{name: {rank: ||y_r - y|| / ||y||}}`` for each layer and rank in ``ranks``, on ``calibration``.

    ``y`` is the output of layer ``name`` (an eligible ``nn.Conv2d``, see :func:`to_separable`, or
    ``nn.Linear``) when the *original* model runs ``calibration``, and ``y_r`` that of its rank-r
    replacement (:class:`~sepconv.layers.SeparableConv2d` or :class:`~sepconv.layers.LowRankLinear`,
    from the SVD) on the same input: each layer alone, not the error the layers before it add. A layer
    called several times is measured over all its calls. Norms are Frobenius, over the whole batch.
    The model runs once, in eval mode without gradients, and is left as it was.

    >>> torch.manual_seed(0) and None
    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 10))
    >>> errors = layer_output_errors(model, torch.randn(4, 3, 6, 6), {"0": [1, 8], "3": [10]})
    >>> errors["0"][8] < 1e-6, errors["0"][1] > 0.1, errors["3"][10] < 1e-6
    (True, True, True)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"layer_output_errors expects an nn.Module for model, got {type(model).__name__}")
    if not isinstance(calibration, torch.Tensor) or calibration.dim() < 1 or calibration.shape[0] < 1:
        shape = (
            tuple(calibration.shape) if isinstance(calibration, torch.Tensor) else type(calibration).__name__
        )
        raise ValueError(f"calibration must be a batch of inputs (N, ...) with N >= 1, got {shape}")
    builders = _builders(model, ranks)
    sums: dict[str, dict[int, list[float]]] = {name: {} for name in builders}

    def measure(name: str) -> Any:
        build = builders[name]

        def hook(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> None:
            for rank in dict.fromkeys(ranks[name]):
                replacement = build(rank).eval()
                totals = sums[name].setdefault(rank, [0.0, 0.0])
                difference, reference = squared_norms(replacement(args[0]), output)
                totals[0] += difference
                totals[1] += reference

        return hook

    handles = [model.get_submodule(name).register_forward_hook(measure(name)) for name in builders]
    try:
        run_original(model, calibration)
    finally:
        for handle in handles:
            handle.remove()
    never_ran = [name for name in builders if ranks[name] and not sums[name]]
    if never_ran:
        raise ValueError(
            f"layer(s) {', '.join(map(repr, never_ran))} did not run when {type(model).__name__} ran the "
            "calibration batch: their output errors are unknown"
        )
    return {
        name: {rank: relative_output_error(*totals) for rank, totals in by_rank.items()}
        for name, by_rank in sums.items()
    }


def run_original(model: nn.Module, inputs: torch.Tensor) -> None:
    """Run ``model`` on ``inputs`` once, in eval mode without gradients, restoring every module's mode.

    Floating-point inputs take the model's device and dtype. An input the model cannot take is a
    ValueError that says so.
    """
    parameter = next(model.parameters(), None)
    if parameter is not None:
        dtype = parameter.dtype if inputs.is_floating_point() else inputs.dtype
        inputs = inputs.to(parameter.device, dtype)
    was_training = {module: module.training for module in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            model(inputs)
    except Exception as error:
        message = " ".join(str(error).split())[:300] or type(error).__name__
        raise ValueError(
            f"calibration: {type(model).__name__} cannot run on the calibration batch of shape "
            f"{tuple(inputs.shape)}: {message}"
        ) from error
    finally:
        for module, mode in was_training.items():
            module.training = mode


def _builders(model: nn.Module, ranks: Mapping[str, Sequence[int]]) -> dict[str, Builder]:
    """Per named layer, a builder of its replacements; every name and rank checked first."""
    if not isinstance(ranks, Mapping):
        raise ParameterError(
            f"ranks must map layer names to sequences of ranks, got {type(ranks).__name__}", param="ranks"
        )
    convs, skipped_convs = eligible_layers(model, 2, [], [])
    linears, skipped_linears = eligible_linears(model, 0, [], [])
    reasons = dict([*skipped_convs, *skipped_linears])
    builders: dict[str, Builder] = {}
    for name, wanted in ranks.items():
        if name not in convs and name not in linears:
            why = reasons.get(name, "no nn.Conv2d or nn.Linear has this name")
            raise ParameterError(
                f"ranks names layer {name!r}, which has no replacement: {why}", param="ranks"
            )
        layer = model.get_submodule(name)
        exact = max_rank(layer) if isinstance(layer, nn.Conv2d) else linear_max_rank(cast(nn.Linear, layer))
        if isinstance(wanted, str | bytes) or not isinstance(wanted, Sequence):
            raise ParameterError(
                f"ranks[{name!r}] must be a sequence of ranks, got {wanted!r}", param="ranks"
            )
        for rank in wanted:
            if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= exact:
                raise ParameterError(
                    f"ranks[{name!r}] must hold {describe_integer(1, exact, plural=True)} (at {exact} the "
                    f"replacement is already exact), got {rank!r}",
                    param="ranks",
                )
        builders[name] = _builder(layer)
    return builders


def _builder(layer: nn.Module) -> Builder:
    """Replacements of ``layer`` by rank, sharing one decomposition computed when first needed."""
    decomposition: list[Any] = []

    def build(rank: int) -> nn.Module:
        if isinstance(layer, nn.Conv2d):
            if not decomposition:
                decomposition.append(channel_svd(layer))
            return separable_like(layer, rank, decomposition[0])
        assert isinstance(layer, nn.Linear)  # _builders admits convolutions and linear layers only
        if not decomposition:
            decomposition.append(linear_svd(layer))
        return low_rank_like(layer, rank, svd=decomposition[0])

    return build
