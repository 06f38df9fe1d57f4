"""The probe run of a conversion: each converted layer's output shapes, and on a calibration batch its error.

One forward pass of the original model, with a hook on every converted layer, gives the output
shapes the MACs are counted at (every call of a layer run twice included) and, when the input is a
calibration batch, the relative output error of the layer that replaces it on the same input.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from sepconv.checks import check_image_size

__all__ = ["Plan", "probe", "relative_output_error", "resolve_input_size", "squared_norms"]

#: One converted layer: its qualified name, the original layer, the layer replacing it, its rank.
Plan = tuple[str, nn.Module, nn.Module, int]


def resolve_input_size(
    model: nn.Module, input_size: Sequence[int] | None, calibration: torch.Tensor | None
) -> tuple[int, ...] | None:
    """The (C, H, W) MACs are counted at: given, else the calibration batch's, else the registered model's."""
    if input_size is not None:
        return check_image_size("input_size", input_size)
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


def probe(
    model: nn.Module,
    plans: list[Plan],
    size: tuple[int, ...] | None,
    calibration: torch.Tensor | None,
) -> tuple[dict[str, list[tuple[int, ...]]] | None, dict[str, float], str | None]:
    """Each converted layer's output shape (per sample: no batch dimension) at every call, on a
    calibration batch its output error, and a problem.

    Without a calibration batch, a model that cannot run on a plain (1, C, H, W) input (several
    inputs, a detection model's image list) is no reason to refuse the conversion: its MACs are left
    unknown, and the problem is returned for the report. A calibration batch the model cannot take is
    the caller's error.
    """
    if size is None:
        return None, {}, None
    shapes: dict[str, list[tuple[int, ...]]] = {}
    sums: dict[str, list[float]] = {}

    def watch(name: str, new_layer: nn.Module) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> None:
            shapes.setdefault(name, []).append(tuple(int(size) for size in output.shape[1:]))
            if calibration is not None:
                totals = sums.setdefault(name, [0.0, 0.0])
                difference, reference = squared_norms(new_layer(args[0]), output)
                totals[0] += difference
                totals[1] += reference

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
    errors = {name: relative_output_error(*totals) for name, totals in sums.items()}
    return shapes, errors, None


def squared_norms(approx: torch.Tensor, reference: torch.Tensor) -> tuple[float, float]:
    """||approx - reference||^2 and ||reference||^2 (Frobenius, in float64): sums over calls and batches."""
    reference = reference.double()
    return float((approx.double() - reference).square().sum()), float(reference.square().sum())


def relative_output_error(squared_difference: float, squared_reference: float) -> float:
    """sqrt(difference / reference): 0 for two zero outputs, infinite for a zero reference alone."""
    if squared_reference > 0:
        return math.sqrt(squared_difference / squared_reference)
    return 0.0 if squared_difference == 0 else math.inf
