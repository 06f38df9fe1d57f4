"""The gradient measurement of receptive fields, shared by the field-rule tests.

All weights 1, biases 0, an all-ones float64 input, so no contribution cancels and an input pixel has a
non-zero gradient for an output unit exactly when the unit depends on it. The first and last such pixel
along an axis are the unit's measured field, compared with what ``summarize`` reports (size, jump and
the centre of unit 0, ``start``). Max pooling, whose gradient reaches one pixel of its window only, is
measured by raising one pixel at a time instead (:func:`impulse_supports`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from sepconv.analysis import summarize


class Op(nn.Module):
    """A leaf module around a functional call (slicing, interpolation), so its output gets a row."""

    def __init__(self, function: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.function = function

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.function(x)


def positive(*layers: nn.Module) -> nn.Sequential:
    """The layers in a float64 Sequential with every weight 1 and every bias 0."""
    model = nn.Sequential(*layers).double().eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            parameter.fill_(0.0 if name.endswith("bias") else 1.0)
    return model


def reported_axes(model: nn.Module, shape: tuple[int, ...], layer: str):
    """(size, jump, start) per spatial axis of ``layer``'s output, and its notes, as summarize reports."""
    summary = summarize(model, inputs=torch.ones(shape, dtype=torch.float64))
    row = next(row for row in summary.layers if row.name == layer)
    assert row.receptive_field is not None, row
    return list(zip(row.receptive_field, row.effective_stride, row.start, strict=True)), row.notes


def layer_output(model: nn.Module, image: torch.Tensor, layer: str) -> torch.Tensor:
    captured = {}
    handle = model.get_submodule(layer).register_forward_hook(lambda m, i, o: captured.update(out=o))
    model(image)
    handle.remove()
    return captured["out"]


def gradient_supports(model: nn.Module, shape: tuple[int, ...], layer: str, axis: int):
    """For every unit along spatial ``axis`` (0: height, 1: width) of ``layer``'s output channel 0, the
    other axis at its middle unit: (first, last) input index with a non-zero gradient, or None."""
    image = torch.ones(shape, dtype=torch.float64, requires_grad=True)
    out = layer_output(model, image, layer)
    other = out.shape[3 - axis] // 2
    supports = []
    for unit in range(out.shape[2 + axis]):
        index = (0, 0, unit, other) if axis == 0 else (0, 0, other, unit)
        (gradient,) = torch.autograd.grad(out[index], image, retain_graph=True)
        hits = (gradient[0].abs().sum(0) > 0).any(dim=1 - axis).nonzero().flatten().tolist()
        supports.append((hits[0], hits[-1]) if hits else None)
    return supports


def impulse_supports(model: nn.Module, shape: tuple[int, ...], layer: str, axis: int):
    """As gradient_supports, for max pooling (whose gradient reaches one pixel of the window only):
    which input pixels change the unit when raised from 1 to 1000. 1000 exceeds any value an all-ones
    input gives with these small all-ones kernels, so a raised pixel inside the window wins the max."""
    _, channels, height, width = shape
    images = torch.ones(height * width, channels, height, width, dtype=torch.float64)
    images.view(height * width, channels, -1)[
        torch.arange(height * width), :, torch.arange(height * width)
    ] = 1000.0
    with torch.no_grad():
        base = layer_output(model, torch.ones(shape, dtype=torch.float64), layer)[0, 0]
        changed = (layer_output(model, images, layer)[:, 0] != base).view(height, width, *base.shape)
    other = base.shape[1 - axis] // 2
    supports = []
    for unit in range(base.shape[axis]):
        reached = changed[:, :, unit, other] if axis == 0 else changed[:, :, other, unit]
        hits = reached.any(dim=1 - axis).nonzero().flatten().tolist()
        supports.append((hits[0], hits[-1]) if hits else None)
    return supports


def theory_interval(size, jump, start, unit):
    centre = start + unit * jump
    return centre - (size - 1) / 2, centre + (size - 1) / 2


def assert_exact_per_unit(supports, size, jump, start, length):
    """Every unit's measured field is the theory clipped to the image (borders included); a unit that
    sees padding only has no gradient at all."""
    for unit, support in enumerate(supports):
        first, last = theory_interval(size, jump, start, unit)
        clipped = (max(0, first), min(length - 1, last))
        expected = clipped if clipped[0] <= clipped[1] else None
        assert support == expected, (unit, support, (first, last))


def reached_pixels(model: nn.Module, shape: tuple[int, ...], index: tuple[int, ...]) -> set[tuple[int, int]]:
    """(row, column) of every input pixel with a non-zero gradient for ``model``'s output at ``index``."""
    image = torch.ones(shape, dtype=torch.float64, requires_grad=True)
    (gradient,) = torch.autograd.grad(model(image)[index], image)
    return {tuple(pixel) for pixel in (gradient[0].abs().sum(0) > 0).nonzero().tolist()}


def all_pixels(shape: tuple[int, ...]) -> set[tuple[int, int]]:
    return {(row, column) for row in range(shape[2]) for column in range(shape[3])}
