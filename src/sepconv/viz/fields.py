"""Receptive-field maps: what one output unit of a layer sees, in theory and in effect.

The theoretical receptive field comes from :func:`sepconv.analysis.summarize` (the Distill 2019
recurrences): the unit at output position (y, x) is centred at ``start + position * effective_stride``
and spans ``receptive_field`` input pixels per axis. The effective receptive field is the magnitude
of the unit's gradient with respect to the input (Luo et al., NeurIPS 2016), for the model's actual
weights in eval mode: it shows which pixels inside the theoretical box really move the unit.
:func:`effective_receptive_field` computes the numbers (no matplotlib), :func:`draw_receptive_field`
draws them, :func:`receptive_field_map` does both.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = [
    "PixelBox",
    "ReceptiveFieldMap",
    "draw_receptive_field",
    "effective_receptive_field",
    "receptive_field_map",
]

Number = int | float


@dataclass(frozen=True)
class PixelBox:
    """A rectangle of input pixels: rows ``top`` .. ``top + height - 1``, columns likewise.

    Coordinates may be negative or run past the image (a theoretical field that extends past the
    border), and may be halves for fields of even size around a half-pixel centre.
    """

    top: Number
    left: Number
    height: Number
    width: Number

    def clipped(self, height: int, width: int) -> PixelBox:
        """The part of this box inside an image of ``height`` x ``width`` pixels."""
        top, left = max(self.top, 0), max(self.left, 0)
        bottom, right = min(self.top + self.height, height), min(self.left + self.width, width)
        return PixelBox(
            _number(top), _number(left), _number(max(bottom - top, 0)), _number(max(right - left, 0))
        )

    def to_dict(self) -> dict[str, Number]:
        """``top``, ``left``, ``height`` and ``width`` as a JSON-able dict."""
        return {"top": self.top, "left": self.left, "height": self.height, "width": self.width}


@dataclass(frozen=True)
class ReceptiveFieldMap:
    """The theoretical and effective receptive field of one output unit of ``layer``.

    ``gradient`` is ``|d unit / d input|`` summed over input channels (H x W, on the CPU); ``support``
    is the bounding box of its non-zero pixels (None when the gradient is zero everywhere: a unit
    that is flat at this input, such as a ReLU at 0 or a ReLU6 at 6). ``channel`` None means the unit is the sum over all channels.
    ``inputs`` is the image the gradient was taken at (C x H x W), kept for drawing.
    """

    layer: str
    position: tuple[int, int]
    channel: int | None
    output_size: tuple[int, int]
    receptive_field: tuple[Number, Number]
    effective_stride: tuple[Number, Number]
    start: tuple[Number, Number]
    theoretical: PixelBox
    support: PixelBox | None
    gradient: torch.Tensor
    inputs: torch.Tensor
    input_label: str = "input"

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the input the map covers."""
        return (int(self.gradient.shape[0]), int(self.gradient.shape[1]))

    @property
    def extends_past_border(self) -> bool:
        """Whether the theoretical field reaches outside the input (padding is what it sees there)."""
        return self.theoretical.clipped(*self.input_size) != self.theoretical

    def to_dict(self) -> dict[str, Any]:
        """The numbers as JSON-ready values (not the gradient map itself)."""
        return {
            "layer": self.layer,
            "position": list(self.position),
            "channel": "sum" if self.channel is None else self.channel,
            "input": self.input_label,
            "input_shape": list(self.inputs.shape),
            "output_size": list(self.output_size),
            "receptive_field": list(self.receptive_field),
            "effective_stride": list(self.effective_stride),
            "start": list(self.start),
            "theoretical_box": self.theoretical.to_dict(),
            "theoretical_box_clipped": self.theoretical.clipped(*self.input_size).to_dict(),
            "extends_past_border": self.extends_past_border,
            "effective_support_box": None if self.support is None else self.support.to_dict(),
            "gradient_max": float(self.gradient.max()),
            "gradient_sum": float(self.gradient.sum()),
            "units": {
                "boxes": "input pixels (row, column)",
                "gradient": "|d unit / d input|, summed over channels",
            },
        }


def effective_receptive_field(
    model: nn.Module,
    layer: str,
    inputs: torch.Tensor,
    *,
    position: Sequence[int] | None = None,
    channel: int | None = None,
    input_label: str = "input",
) -> ReceptiveFieldMap:
    """Theoretical box and input-gradient map of one output unit of ``layer`` (a qualified module name).

    ``inputs`` is one image (C x H x W, or 1 x C x H x W). ``position`` is (row, column) in the layer's
    output map, by default its centre (``size // 2`` per axis). The unit is the output at that
    position in ``channel``, or summed over channels when ``channel`` is None. The model runs once
    in eval mode (put back as it was); parameters' ``.grad`` is left untouched. An image whose
    forward pass cannot fit in memory (a lower bound: the image and the largest layer's call) is
    refused with a :class:`~sepconv.machine.MemoryLimitError` naming ``inputs``.

    >>> conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
    >>> field = effective_receptive_field(nn.Sequential(conv), "0", torch.randn(1, 7, 7))
    >>> field.theoretical, field.support == field.theoretical
    (PixelBox(top=2, left=2, height=3, width=3), True)
    """
    from sepconv.analysis.memory import forward_bytes
    from sepconv.machine import require_memory

    module = _find_layer(model, layer)
    image = _one_image(inputs)
    # The passes below hold a copy of the image and the activations: refuse an image they cannot fit.
    needed = forward_bytes(model, tuple(image.shape))
    require_memory("inputs", "x".join(map(str, image.shape)), needed, what="a forward pass on it")
    row = _summary_row(model, layer, module, image)
    parameter = next(model.parameters(), None)
    if parameter is not None:
        image = image.to(device=parameter.device, dtype=parameter.dtype)
    image = image.detach().clone().requires_grad_(True)
    unit, output_size, position = _unit_of(model, layer, module, image, position, channel)
    (gradient,) = torch.autograd.grad(unit, image)
    magnitude = gradient[0].abs().sum(dim=0).detach().cpu()
    field, stride, start = row.receptive_field, row.effective_stride, row.start
    centre = [start[axis] + position[axis] * stride[axis] for axis in range(2)]
    theoretical = PixelBox(
        _number(centre[0] - (field[0] - 1) / 2), _number(centre[1] - (field[1] - 1) / 2), field[0], field[1]
    )
    return ReceptiveFieldMap(
        layer=layer,
        position=position,
        channel=channel,
        output_size=output_size,
        receptive_field=tuple(field),
        effective_stride=tuple(stride),
        start=tuple(start),
        theoretical=theoretical,
        support=_support(magnitude),
        gradient=magnitude,
        inputs=image[0].detach().cpu(),
        input_label=input_label,
    )


def draw_receptive_field(field: ReceptiveFieldMap) -> Any:
    """A Figure: the input with the theoretical box (left) and the gradient heat map with both boxes (right)."""
    from matplotlib.patches import Rectangle

    from sepconv.viz.style import color, new_figure

    height, width = field.input_size
    figure = new_figure(10, 4.6)
    image_axes, heat_axes = figure.subplots(1, 2)
    image_axes.imshow(_displayable(field.inputs), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    image_axes.set_title(f"input: {field.input_label}")
    heat = heat_axes.imshow(field.gradient.numpy(), cmap="viridis", interpolation="nearest")
    heat_axes.set_title("effective receptive field")
    colorbar = figure.colorbar(heat, ax=heat_axes, shrink=0.85)
    colorbar.set_label("|d unit / d input| (summed over channels)")
    box = field.theoretical.clipped(height, width)
    past = " (clipped: extends past the border)" if field.extends_past_border else ""
    size = "x".join(str(value) for value in field.receptive_field)
    for axes in (image_axes, heat_axes):
        axes.set_xlabel("column (input pixels)")
        axes.set_ylabel("row (input pixels)")
        # Pixel (r, c) covers [r - 0.5, r + 0.5] in imshow's coordinates.
        axes.add_patch(
            Rectangle(
                (box.left - 0.5, box.top - 0.5),
                box.width,
                box.height,
                fill=False,
                edgecolor=color(5),
                linewidth=2,
                label=f"theoretical field {size}{past}",
            )
        )
        if field.support is not None:
            support = field.support
            axes.add_patch(
                Rectangle(
                    (support.left - 0.5, support.top - 0.5),
                    support.width,
                    support.height,
                    fill=False,
                    edgecolor=color(6),
                    linestyle="--",
                    linewidth=1.5,
                    label=f"non-zero gradient {support.height}x{support.width}",
                )
            )
        axes.set_xlim(-0.5, width - 0.5)
        axes.set_ylim(height - 0.5, -0.5)
    image_axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=1, frameon=False)
    unit = "sum over channels" if field.channel is None else f"channel {field.channel}"
    stride = "x".join(str(value) for value in field.effective_stride)
    figure.suptitle(
        f"layer {field.layer} at (row {field.position[0]}, column {field.position[1]}), {unit}; "
        f"output {field.output_size[0]}x{field.output_size[1]}, input {height}x{width}, "
        f"field {size}, stride {stride}"
        + ("" if field.support is not None else "; gradient is zero (the unit is flat at this input)")
    )
    return figure


def receptive_field_map(
    model: nn.Module,
    layer: str,
    inputs: torch.Tensor,
    *,
    position: Sequence[int] | None = None,
    channel: int | None = None,
    input_label: str = "input",
) -> tuple[ReceptiveFieldMap, Any]:
    """:func:`effective_receptive_field` and its picture (a ``matplotlib.figure.Figure``) in one call."""
    field = effective_receptive_field(
        model, layer, inputs, position=position, channel=channel, input_label=input_label
    )
    return field, draw_receptive_field(field)


def _find_layer(model: nn.Module, layer: str) -> nn.Module:
    names = [name for name, _ in model.named_modules() if name]
    if not isinstance(layer, str) or layer not in names:
        close = difflib.get_close_matches(str(layer), names, n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; layers include {', '.join(names[:8])}"
        raise ValueError(f"layer {layer!r} is not a layer of {type(model).__name__}{hint}")
    return model.get_submodule(layer)


def _one_image(inputs: torch.Tensor) -> torch.Tensor:
    if (
        not isinstance(inputs, torch.Tensor)
        or inputs.dim() not in (3, 4)
        or (inputs.dim() == 4 and inputs.shape[0] != 1)
    ):
        shape = tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs).__name__
        raise ValueError(f"inputs must be one image, C x H x W or 1 x C x H x W, got {shape}")
    return inputs if inputs.dim() == 4 else inputs.unsqueeze(0)


def _summary_row(model: nn.Module, layer: str, module: nn.Module, image: torch.Tensor) -> Any:
    """``layer``'s row of the model's summary (folded to its depth when it is a container)."""
    from sepconv.analysis import summarize

    summary = summarize(model, inputs=image.detach())
    rows = [row for row in summary.layers if row.name == layer and row.call_index == 0]
    if not rows:  # a container: fold the summary at its depth so it gets a row of its own
        summary = summarize(model, inputs=image.detach(), depth=layer.count(".") + 1)
        rows = [row for row in summary.layers if row.name == layer and row.call_index == 0]
    if not rows or rows[0].output_shape is None:
        raise ValueError(f"layer {layer!r} is not called when {type(model).__name__} runs")
    row = rows[0]
    if row.receptive_field is None or len(row.receptive_field) != 2:
        why = (
            "its units see the whole input"
            if row.sees_whole_input
            else f"it has no 2-D spatial output (output {'x'.join(map(str, row.output_shape or ()))})"
        )
        raise ValueError(
            f"layer {layer!r} has no receptive field to map: {why}; choose a convolution or pooling layer"
        )
    return row


def _unit_of(
    model: nn.Module,
    layer: str,
    module: nn.Module,
    image: torch.Tensor,
    position: Sequence[int] | None,
    channel: int | None,
) -> tuple[torch.Tensor, tuple[int, int], tuple[int, int]]:
    """Run the model once and take the unit from ``module``'s first output, inside the hook.

    Taking it inside the hook (rather than keeping the output) matters: a following in-place
    activation would otherwise turn the kept tensor into the activation's output.
    """
    taken: dict[str, Any] = {}

    def take(_: nn.Module, __: Any, output: Any) -> None:
        if "unit" in taken:
            return
        if not isinstance(output, torch.Tensor) or output.dim() != 4:
            raise ValueError(f"layer {layer!r} has no 2-D spatial output (N x C x H x W) to map")
        size = (int(output.shape[2]), int(output.shape[3]))
        where = _check_position(layer, position, size)
        if channel is None:
            unit = output[0, :, where[0], where[1]].sum()
        else:
            if (
                isinstance(channel, bool)
                or not isinstance(channel, int)
                or not 0 <= channel < output.shape[1]
            ):
                raise ValueError(
                    f"channel must be in [0, {output.shape[1] - 1}] for layer {layer!r}, got {channel!r}"
                )
            unit = output[0, channel, where[0], where[1]]
        taken.update(unit=unit, size=size, position=where)

    modes = {submodule: submodule.training for submodule in model.modules()}
    handle = module.register_forward_hook(take)
    model.eval()
    try:
        with torch.enable_grad():
            model(image)
    finally:
        handle.remove()
        for submodule, training in modes.items():
            submodule.training = training
    return taken["unit"], taken["size"], taken["position"]


def _check_position(layer: str, position: Sequence[int] | None, size: tuple[int, int]) -> tuple[int, int]:
    if position is None:
        return (size[0] // 2, size[1] // 2)
    where = tuple(position)
    if (
        len(where) != 2
        or any(isinstance(value, bool) or not isinstance(value, int) for value in where)
        or not (0 <= where[0] < size[0] and 0 <= where[1] < size[1])
    ):
        raise ValueError(
            f"position must be (row, column) inside the {size[0]}x{size[1]} output of layer {layer!r} "
            f"(rows 0..{size[0] - 1}, columns 0..{size[1] - 1}), got {position!r}"
        )
    return where


def _support(magnitude: torch.Tensor) -> PixelBox | None:
    """Bounding box of the non-zero pixels (exact zeros: outside the field, no path reaches them)."""
    rows = torch.nonzero(magnitude.amax(dim=1)).flatten()
    columns = torch.nonzero(magnitude.amax(dim=0)).flatten()
    if rows.numel() == 0:
        return None
    top, left = int(rows[0]), int(columns[0])
    return PixelBox(top, left, int(rows[-1]) - top + 1, int(columns[-1]) - left + 1)


def _displayable(image: torch.Tensor) -> Any:
    """The input min-max scaled to [0, 1] for drawing: H x W x 3 when it has 3 channels, else gray H x W."""
    shown = image.float().permute(1, 2, 0) if image.shape[0] == 3 else image.float().mean(dim=0)
    low, high = shown.min(), shown.max()
    return ((shown - low) / (high - low)).numpy() if high > low else torch.zeros_like(shown).numpy()


def _number(value: float) -> Number:
    """Integral values as int (exact in JSON), others as float."""
    return int(value) if float(value).is_integer() else float(value)
