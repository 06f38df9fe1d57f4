"""The probe run of a conversion: each converted layer's output sizes, and on a calibration batch its error.

One forward pass of the original model, with a hook on every converted convolution, gives the
spatial sizes the MACs are counted at (every call of a layer run twice included) and, when the input
is a calibration batch, the relative output error of the layer that replaces it on the same input.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from sepconv.checks import check_image_size
from sepconv.layers.separable import SeparableConv2d

__all__ = ["Plan", "probe", "resolve_input_size"]

# One converted layer: its qualified name, the original convolution, the layer replacing it, its rank.
Plan = tuple[str, nn.Conv2d, SeparableConv2d, int]


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
