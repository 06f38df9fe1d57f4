"""``summarize(model, input_size)``: per-layer shapes, parameters, MACs and receptive field of any model.

One instrumented forward pass (:mod:`sepconv.analysis.profile`) gives, for every module call, its
input and output shapes, the multiply-adds of the operators it ran (PyTorch's own flop formulas, so
functional calls are never missed) and the receptive field of its output (the Distill 2019
recurrences, followed through residual adds and concatenations). The rows are the leaf layers, plus
any container whose own ``forward`` does work (a functional ``F.conv2d``, its own parameters), plus
modules whose parameters the forward pass never used; so the rows add up to the totals.

Units: MACs count multiply-adds (one multiply and one add); FLOPs = 2 x MACs. Convolutions, linear
layers, matrix products and attention are counted, bias additions, normalization, activations and
pooling are not: the convention of the MobileNet papers and of ``torch.utils.flop_counter``.
"""

from __future__ import annotations

import copy
import itertools
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sepconv.analysis import render
from sepconv.analysis.fields import TensorField
from sepconv.analysis.profile import ModuleCall, profile_forward
from sepconv.checks import describe_integer
from sepconv.errors import ArgumentTypeError, ParameterError

__all__ = ["LayerSummary", "MeasuredCost", "ModelSummary", "summarize"]

Number = int | float


@dataclass(frozen=True)
class MeasuredCost:
    """A layer timed alone on an engine at its input in the summary (``sepconv summary --measure``).

    ``ms`` is the median over rounds of one call on the summary's batch, ``spread_ms`` their
    interquartile range; ``bytes`` what the call moves at least (the input and output activations and
    the layer's weights, each element at the engine's precision) and ``intensity`` the layer's MACs per
    byte moved: a low intensity says the layer waits on memory, not on arithmetic. A layer that could
    not be timed alone has ``ms`` None and the ``reason``. ``cached``: read from the cost table.
    Filled in by :func:`sepconv.optimize.costs.measure_summary`; summarize itself measures no time.
    """

    ms: float | None
    spread_ms: float | None
    bytes: int
    intensity: float | None
    cached: bool = False
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of these fields (``sepconv summary --measure --json`` prints it per layer)."""
        return {
            "ms": self.ms,
            "spread_ms": self.spread_ms,
            "bytes": self.bytes,
            "intensity": self.intensity,
            "cached": self.cached,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class LayerSummary:
    """One row of a :class:`ModelSummary`: one call of one layer (or a folded group of layers).

    receptive_field, effective_stride and start are per spatial axis, in input pixels: how many input
    pixels one output unit sees, the distance between neighbouring units, and the input coordinate of
    the centre of the first unit. They are None when the units see the whole input
    (``sees_whole_input``: after global pooling or a linear layer) or when no rule applies.
    notes: "shared" (a module called again; its parameters were counted at its first call),
    "own ops" (a container's own forward), "not called", "global context", "misaligned paths",
    "approximate", "unknown" (receptive field tracking was lost on the way to this output).
    """

    name: str
    type: str
    input_shape: tuple[int, ...] | None
    output_shape: tuple[int, ...] | None
    params: int
    trainable_params: int
    macs: int
    output_bytes: int
    receptive_field: tuple[Number, ...] | None
    effective_stride: tuple[Number, ...] | None
    start: tuple[Number, ...] | None
    sees_whole_input: bool = False
    depth: int = 0
    call_index: int = 0
    notes: tuple[str, ...] = ()
    measured: MeasuredCost | None = None

    @property
    def flops(self) -> int:
        """2 x MACs."""
        return 2 * self.macs

    @property
    def effective_padding(self) -> tuple[Number, ...] | None:
        """Distill's effective padding per axis, how far the first unit's field reaches before pixel 0."""
        if self.receptive_field is None or self.start is None:
            return None
        return tuple(_number((size - 1) / 2 - start) for size, start in zip(self.receptive_field, self.start))

    @property
    def display_name(self) -> str:
        """Qualified name, ``(model)`` for the root, with the call number for a module called again."""
        name = self.name or "(model)"
        return f"{name} (call {self.call_index + 1})" if self.call_index else name

    def to_dict(self) -> dict[str, Any]:
        """Every field as JSON-ready values (exact integers, lists for shapes)."""
        return {
            "name": self.name,
            "type": self.type,
            "call_index": self.call_index,
            "depth": self.depth,
            "input_shape": _list(self.input_shape),
            "output_shape": _list(self.output_shape),
            "params": self.params,
            "trainable_params": self.trainable_params,
            "macs": self.macs,
            "flops": self.flops,
            "output_bytes": self.output_bytes,
            "receptive_field": _list(self.receptive_field),
            "effective_stride": _list(self.effective_stride),
            "start": _list(self.start),
            "effective_padding": _list(self.effective_padding),
            "sees_whole_input": self.sees_whole_input,
            "notes": list(self.notes),
            **({} if self.measured is None else {"measured": self.measured.to_dict()}),
        }


@dataclass(frozen=True)
class ModelSummary:
    """Per-layer costs and receptive fields of one model at one input size; see :func:`summarize`.

    receptive_field / effective_stride: of the deepest feature map that still has a spatial layout
    (``receptive_field_layer``), which is what papers quote; None ("unknown") if no layer has one or if
    tracking was lost on any path (``receptive_field_lost_at`` says where first: an operator without
    a rule, such as a custom op or a permute that moves the spatial axes), since a layer after the
    loss may see more than any layer still tracked.
    activation_bytes: the outputs of all rows added up (a bound on what inference keeps alive).
    measurement: where the rows' :class:`MeasuredCost` were measured (engine, batch, threads, CPU), when
    they were (``sepconv summary --measure``); None otherwise.
    """

    model: str
    input_shapes: tuple[tuple[int, ...], ...]
    output_shapes: tuple[tuple[int, ...], ...]
    layers: tuple[LayerSummary, ...]
    total_params: int
    trainable_params: int
    total_macs: int
    activation_bytes: int
    receptive_field: tuple[Number, ...] | None
    effective_stride: tuple[Number, ...] | None
    receptive_field_layer: str | None
    depth: int | None = None
    receptive_field_lost_at: str | None = None
    measurement: dict[str, Any] | None = None

    @property
    def total_flops(self) -> int:
        """2 x total MACs."""
        return 2 * self.total_macs

    def to_dict(self) -> dict[str, Any]:
        """The whole summary as JSON-ready values: exact integers, units stated."""
        return {
            "model": self.model,
            "input_shapes": [list(shape) for shape in self.input_shapes],
            "output_shapes": [list(shape) for shape in self.output_shapes],
            "units": {
                "macs": "multiply-accumulates (one multiply + one add)",
                "flops": "2 x macs",
                "output_bytes": "bytes",
                "receptive_field": "input pixels per spatial axis",
                **(
                    {}
                    if self.measurement is None
                    else {
                        "measured.ms": "milliseconds per call on the input batch, the layer run alone",
                        "measured.bytes": "bytes moved: input + output + weights at the engine's precision",
                        "measured.intensity": "macs per byte moved",
                    }
                ),
            },
            "total_params": self.total_params,
            "trainable_params": self.trainable_params,
            "total_macs": self.total_macs,
            "total_flops": self.total_flops,
            "activation_bytes": self.activation_bytes,
            "receptive_field": _list(self.receptive_field),
            "effective_stride": _list(self.effective_stride),
            "receptive_field_layer": self.receptive_field_layer,
            "receptive_field_lost_at": self.receptive_field_lost_at,
            "depth": self.depth,
            **({} if self.measurement is None else {"measurement": self.measurement}),
            "layers": [layer.to_dict() for layer in self.layers],
        }

    def to_markdown(self) -> str:
        """A GitHub-flavoured markdown table with human-readable numbers, then the totals."""
        return render.markdown(self)

    def to_csv(self) -> str:
        """One CSV row per layer with exact integers (shapes as 1x3x224x224)."""
        return render.csv_text(self)

    def to_rich(self) -> Any:
        """A ``rich`` renderable (table and totals), for terminals."""
        return render.rich_renderable(self)

    def __rich__(self) -> Any:
        return self.to_rich()

    def __str__(self) -> str:
        return render.plain_text(self)


def summarize(
    model: nn.Module,
    input_size: Sequence[int] | None = None,
    *,
    inputs: torch.Tensor | Sequence[Any] | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    depth: int | None = None,
) -> ModelSummary:
    """Shapes, parameters, MACs and receptive field of every layer of ``model``, from one forward pass.

    Give ``input_size`` (the full shape, batch included: ``(1, 3, 224, 224)``; a standard normal input
    of ``dtype``, by default that of the model's floating-point parameters, else torch's default dtype,
    drawn from its own generator seeded 0: the same input every call, and the global RNG is left
    alone) or ``inputs`` (a tensor, or a tuple of positional arguments). The model runs in eval mode
    without gradients on ``device`` and is put back as it was (mode and device); with
    ``device="meta"`` a copy with empty meta weights runs instead (nothing computed, nothing
    allocated, the model untouched). ``depth`` folds submodules deeper than that many levels into
    their ancestor, like torchinfo's depth.

    >>> from torch import nn
    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2))
    >>> summary = summarize(model, (1, 3, 32, 32))
    >>> summary.total_params, summary.total_macs  # 3*3*3*8 + 8 + 3*3*8*8 + 8; 8*32*32*27 + 8*15*15*72
    (808, 350784)
    >>> summary.receptive_field, summary.effective_stride
    ((5, 5), (2, 2))
    """
    if not isinstance(model, nn.Module):
        raise ArgumentTypeError(f"model must be an nn.Module, got {type(model).__name__} {model!r:.80}")
    if depth is not None:
        message = f"depth must be {describe_integer(0)} or None, got {depth!r}"
        if isinstance(depth, bool) or not isinstance(depth, numbers.Integral):
            raise ArgumentTypeError(message, param="depth")
        if depth < 0:
            raise ParameterError(message, param="depth")
        depth = int(depth)
    if dtype is None:
        dtype = next(
            (p.dtype for p in model.parameters() if p.is_floating_point()), torch.get_default_dtype()
        )
    if torch.device(device).type == "meta":
        model = _meta_copy(model)
    arguments = _make_inputs(input_size, inputs, device, dtype)
    calls, output, lost_at = _run(model, arguments, device)
    rows = _rows(model, calls, depth)
    deepest = _deepest_local(calls) if lost_at is None else None
    tensors = [item for item in arguments if isinstance(item, torch.Tensor)]
    outputs = [item for item in torch.utils._pytree.tree_flatten(output)[0] if isinstance(item, torch.Tensor)]
    return ModelSummary(
        model=type(model).__name__,
        input_shapes=tuple(tuple(t.shape) for t in tensors),
        output_shapes=tuple(tuple(t.shape) for t in outputs),
        layers=tuple(rows),
        total_params=sum(p.numel() for p in model.parameters()),
        trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
        total_macs=sum(call.own_macs for call in calls),
        activation_bytes=sum(row.output_bytes for row in rows),
        receptive_field=deepest[1] if deepest else None,
        effective_stride=deepest[2] if deepest else None,
        receptive_field_layer=(deepest[0].name or "(model)") if deepest else None,
        depth=depth,
        receptive_field_lost_at=lost_at,
    )


def _make_inputs(
    input_size: Sequence[int] | None,
    inputs: torch.Tensor | Sequence[Any] | None,
    device: torch.device | str,
    dtype: torch.dtype,
) -> tuple[Any, ...]:
    if (input_size is None) == (inputs is None):
        raise ValueError("give exactly one of input_size (e.g. (1, 3, 224, 224)) and inputs")
    if inputs is not None:
        if isinstance(inputs, str | bytes) or not isinstance(inputs, torch.Tensor | Sequence):
            raise ArgumentTypeError(
                f"inputs must be a tensor or a sequence of the model's positional arguments, "
                f"got {type(inputs).__name__} {inputs!r:.80}"
            )
        items = (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)
        return tuple(item.to(device) if isinstance(item, torch.Tensor) else item for item in items)
    return (_random_input(input_size, dtype).to(device),)


def _random_input(input_size: Any, dtype: torch.dtype) -> torch.Tensor:
    """A standard normal input of shape ``input_size`` from a generator seeded 0 (the global RNG untouched)."""
    message = f"input_size must be positive integers, batch included (1, 3, 224, 224); got {input_size!r}"
    if isinstance(input_size, numbers.Integral) and not isinstance(input_size, bool):
        raise ArgumentTypeError(
            f"{message}: one number is ambiguous, give (1, C, {input_size}, {input_size}) for "
            f"{input_size}x{input_size} images"
        )
    if hasattr(input_size, "tolist") and not isinstance(input_size, numbers.Number):
        input_size = input_size.tolist()  # a numpy array or a tensor of sizes
    if isinstance(input_size, str | bytes) or not isinstance(input_size, Sequence):
        raise ArgumentTypeError(message)
    if any(isinstance(size, bool) or not isinstance(size, numbers.Integral) for size in input_size):
        raise ArgumentTypeError(message)
    if not input_size or any(size < 1 for size in input_size):
        raise ValueError(message)
    shape = tuple(int(size) for size in input_size)
    generator = torch.Generator().manual_seed(0)
    return torch.randn(shape, generator=generator, dtype=dtype)


def _meta_copy(model: nn.Module) -> nn.Module:
    """``model`` with empty meta tensors for its parameters and buffers (tied ones stay tied).

    Nothing is copied but the module structure, and the caller's model keeps its weights, which moving
    it with ``model.to("meta")`` would discard (they cannot be moved back).
    """
    memo: dict[int, Any] = {}
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        meta = torch.empty_like(tensor, device="meta")
        if isinstance(tensor, nn.Parameter):
            meta = nn.Parameter(meta, requires_grad=tensor.requires_grad)
        memo[id(tensor)] = meta
    return copy.deepcopy(model, memo)


def _run(
    model: nn.Module, arguments: tuple[Any, ...], device: torch.device | str
) -> tuple[list[ModuleCall], Any, str | None]:
    modes = {module: module.training for module in model.modules()}
    original_device = next((p.device for p in model.parameters()), None)
    model.eval()
    if original_device is not None and torch.device(device) != original_device:
        model.to(device)
    try:
        calls, output, lost_at = profile_forward(model, arguments)
    finally:
        for module, training in modes.items():
            module.training = training
        if original_device is not None and torch.device(device) != original_device:
            model.to(original_device)
    return calls, output, lost_at


def _own_parameters(module: nn.Module) -> list[nn.Parameter]:
    return list(module.parameters(recurse=False))


def _rows(model: nn.Module, calls: list[ModuleCall], depth: int | None) -> list[LayerSummary]:
    """Choose the rows (leaf calls, containers' own work, folded groups) and count parameters once."""
    seen: set[int] = set()
    rows: list[LayerSummary] = []
    for call in calls:
        if depth is not None and call.depth > depth:
            continue
        folded = depth is not None and call.depth == depth and not call.is_leaf
        own_work = call.own_macs > 0 or bool(_own_parameters(call.module))
        if not (call.is_leaf or folded or own_work):
            continue
        if folded:
            members = calls[call.order : call.last_descendant + 1]
            macs = sum(member.own_macs for member in members)
            parameters = list(call.module.parameters())
        else:
            macs = call.own_macs
            parameters = list(call.module.parameters()) if call.is_leaf else _own_parameters(call.module)
        notes = []
        if not call.is_leaf and not folded:
            notes.append("own ops")
        rows.append(_row(call, macs, parameters, seen, notes))
    rows.extend(_unused_rows(model, seen, depth))
    return rows


def _row(
    call: ModuleCall, macs: int, parameters: list[nn.Parameter], seen: set[int], notes: list[str]
) -> LayerSummary:
    fresh = [p for p in parameters if id(p) not in seen]
    seen.update(id(p) for p in fresh)
    if call.call_index:
        notes.append("shared")
    size, stride, start, whole, field_notes = _field_columns(call.field)
    return LayerSummary(
        name=call.name,
        type=type(call.module).__name__,
        input_shape=call.input_shapes[0] if call.input_shapes else None,
        output_shape=call.output_shapes[0] if call.output_shapes else None,
        params=sum(p.numel() for p in fresh),
        trainable_params=sum(p.numel() for p in fresh if p.requires_grad),
        macs=macs,
        output_bytes=call.output_bytes,
        receptive_field=size,
        effective_stride=stride,
        start=start,
        sees_whole_input=whole,
        depth=call.depth,
        call_index=call.call_index,
        notes=tuple(notes + field_notes),
    )


def _unused_rows(model: nn.Module, seen: set[int], depth: int | None) -> list[LayerSummary]:
    """Modules whose parameters the forward pass never reached (e.g. GoogLeNet's auxiliary heads in eval).

    With ``depth``, a module deeper than that is reported under its ancestor at ``depth``, as called
    modules are folded.
    """
    modules = dict(model.named_modules())
    found: dict[str, list[nn.Parameter]] = {}
    for name, module in modules.items():
        fresh = [p for p in _own_parameters(module) if id(p) not in seen]
        if not fresh:
            continue
        seen.update(id(p) for p in fresh)
        if depth is not None and name.count(".") >= depth:
            name = ".".join(name.split(".")[:depth])
        found.setdefault(name, []).extend(fresh)
    return [
        LayerSummary(
            name=name,
            type=type(modules[name]).__name__,
            input_shape=None,
            output_shape=None,
            params=sum(p.numel() for p in fresh),
            trainable_params=sum(p.numel() for p in fresh if p.requires_grad),
            macs=0,
            output_bytes=0,
            receptive_field=None,
            effective_stride=None,
            start=None,
            depth=0 if not name else name.count(".") + 1,
            notes=("not called",),
        )
        for name, fresh in found.items()
    ]


def _field_columns(
    field: TensorField | None,
) -> tuple[tuple[Number, ...] | None, tuple[Number, ...] | None, tuple[Number, ...] | None, bool, list[str]]:
    if field is None:
        return None, None, None, False, []
    notes = []
    if field.global_context:
        notes.append("global context")
    if field.misaligned:
        notes.append("misaligned paths")
    if field.approximate:
        notes.append("approximate")
    if field.lost:
        notes.append("unknown")
    if field.whole_input or not field.axes:
        return None, None, None, field.whole_input, notes
    return (
        tuple(_number(axis.size) for axis in field.axes),
        tuple(_number(axis.stride) for axis in field.axes),
        tuple(_number(axis.start) for axis in field.axes),
        False,
        notes,
    )


def _deepest_local(
    calls: list[ModuleCall],
) -> tuple[ModuleCall, tuple[Number, ...], tuple[Number, ...]] | None:
    """The call whose output has the largest local receptive field; among equals the last to finish
    (the enclosing block rather than its last layer: its output is where the paths have merged)."""
    best: tuple[Any, ...] | None = None
    for call in calls:
        size, stride, _, _, _ = _field_columns(call.field)
        if size is None:
            continue
        key = (max(size), sum(size), call.exit_order)
        if best is None or key > best[0]:
            best = (key, call, size, stride)
    if best is None:
        return None
    return best[1], best[2], best[3]


def _number(value: float) -> Number:
    """Integral values as int (exact in JSON), others as float."""
    return int(value) if float(value).is_integer() else float(value)


def _list(values: Sequence[Number] | None) -> list[Number] | None:
    return None if values is None else list(values)
