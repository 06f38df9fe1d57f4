"""Receptive fields of every tensor a model computes, propagated operator by operator.

The recurrences are those of Araujo, Norris & Sim, "Computing Receptive Fields of Convolutional Neural
Networks" (Distill, 2019), applied per spatial axis by :func:`sepconv.arithmetic.receptive_field_step`:
size r (input pixels one unit sees), effective stride (the "jump" between neighbouring units, in input
pixels) and start (input coordinate of the centre of the first unit; effective padding = (r - 1)/2 -
start). They are applied to the ATen operators that actually run (convolutions, pooling, padding,
interpolation, slicing), so functional calls, residual adds, concatenations and re-used modules are
followed exactly as the data flows, with no symbolic tracing that could fail.

Where paths merge (add, mul, cat along channels) the field is, as in the paper, the largest over paths;
paths whose unit centres or strides disagree are flagged ``misaligned``. Global pooling, linear layers
on flattened features and attention make a unit depend on the whole input: ``whole_input``, not a made-up
number. A local map multiplied by a global summary (squeeze-and-excitation) keeps its local field and is
flagged ``global_context``. Flattening a map into (batch, features) leaves a tensor without a spatial
layout (a linear layer on it sees the whole input).

Operators without a rule of their own that act position by position (those PyTorch tags pointwise,
normalization, copies and reshapes that keep the trailing spatial axes) keep the field. Anything else
loses track (``lost``): an unknown or custom operator, a reshape that folds spatial axes into a
sequence, a permute that moves them. A lost field stays lost downstream, and the model's headline
receptive field is then unknown rather than that of the last layer before the loss.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

from sepconv.arithmetic import ReceptiveField, receptive_field_step

__all__ = ["FieldTracker", "TensorField", "input_field"]

aten = torch.ops.aten


@dataclass(frozen=True)
class TensorField:
    """What the units of one tensor see of the model input.

    axes: one :class:`~sepconv.arithmetic.ReceptiveField` per spatial axis (the tensor's trailing dims);
    empty when the tensor has no spatial layout any more. whole_input: every unit depends on the whole
    input. global_context: local units that also depend on a global summary of the input.
    misaligned: merged paths disagree in stride or unit centres. approximate: the numbers are bounds
    (adaptive pooling with uneven windows). lost: an operator on the way had no rule for what it does
    to the spatial positions, so nothing is known (no axes).
    """

    axes: tuple[ReceptiveField, ...] = ()
    whole_input: bool = False
    global_context: bool = False
    misaligned: bool = False
    approximate: bool = False
    lost: bool = False


def input_field(tensor: torch.Tensor) -> TensorField:
    """The field of a model input: every trailing dim after (batch, channels) is a spatial axis."""
    spatial_dims = tensor.dim() - 2 if tensor.dim() >= 3 else 0
    return TensorField(axes=(ReceptiveField(),) * spatial_dims)


_WHOLE = TensorField(whole_input=True)
_LOST = TensorField(lost=True)
_Inputs = list[tuple[torch.Tensor, TensorField]]
_Rule = Callable[[Sequence[Any], dict[str, Any], torch.Tensor, _Inputs], TensorField | None]


class FieldTracker:
    """Maps live tensors to their :class:`TensorField`; ``propagate`` applies one operator's rule."""

    def __init__(self) -> None:
        self._fields: WeakIdKeyDictionary = WeakIdKeyDictionary()

    def set(self, tensor: torch.Tensor, field: TensorField) -> None:
        """Record that ``tensor`` carries ``field`` (kept only while the tensor lives)."""
        self._fields[tensor] = field

    def get(self, tensor: Any) -> TensorField | None:
        """The field recorded for ``tensor``; None for a tensor without one, or for anything else."""
        if not isinstance(tensor, torch.Tensor):
            return None
        field: TensorField | None = self._fields.get(tensor)  # type: ignore[no-untyped-call]  # untyped in torch
        return field

    @staticmethod
    def handles(packet: Any) -> bool:
        """Whether ``packet`` has a rule of its own (so it must not be decomposed before we see it)."""
        return packet in _RULES

    def propagate(
        self, func: Any, args: Sequence[Any], kwargs: dict[str, Any], out: Any
    ) -> TensorField | None:
        """Record (and return) the field of ``out``, computed from those of the tensors in ``args``/``kwargs``.

        None when no input carries a field (constants, parameters) or the operator does not depend on
        the values of its inputs (``zeros_like``); such outputs carry no field.
        """
        packet = func._overloadpacket
        inputs = [
            (item, field) for item in tree_flatten((args, kwargs))[0] if (field := self.get(item)) is not None
        ]
        outputs = [item for item in tree_flatten(out)[0] if isinstance(item, torch.Tensor)]
        if not inputs or not outputs or packet in _VALUE_INDEPENDENT:
            return None
        field = _output_field(func, args, kwargs, outputs[0], inputs)
        for item in outputs:
            self.set(item, field)
        return field


def _output_field(
    func: Any, args: Sequence[Any], kwargs: dict[str, Any], out: torch.Tensor, inputs: _Inputs
) -> TensorField:
    if any(field.lost for _, field in inputs):
        return _LOST
    packet = func._overloadpacket
    rule = _RULES.get(packet)
    if rule is None and not (torch.Tag.pointwise in func.tags or packet in _POSITION_WISE):
        # An operator we know nothing about may move values between positions.
        whole = all(field.whole_input for _, field in inputs)
        return replace(_WHOLE, approximate=any(f.approximate for _, f in inputs)) if whole else _LOST
    try:
        field = rule(args, kwargs, out, inputs) if rule is not None else None
        return field if field is not None else _elementwise(args, kwargs, out, inputs)
    except Exception:  # a rule that cannot read this call's arguments (a new overload): say "lost"
        return _LOST


# --- rules: each returns the output's field, or None to fall back to the elementwise rule -----------


def _expand(value: Any, count: int) -> list[int]:
    if isinstance(value, int):
        return [value] * count
    values = list(value)
    return values * count if len(values) == 1 else values


def _field_of(tensor: Any, inputs: _Inputs) -> TensorField | None:
    return next((field for item, field in inputs if item is tensor), None)


def _merge(fields: Sequence[TensorField], context: bool, approximate: bool) -> TensorField:
    """Paths meeting (add, cat along channels): the largest field per axis, alignment checked."""
    merged: list[ReceptiveField] = []
    misaligned = any(field.misaligned for field in fields)
    for axis_fields in zip(*(field.axes for field in fields), strict=True):
        largest = max(axis_fields, key=lambda axis: axis.size)
        if any(axis.stride != largest.stride or axis.start != largest.start for axis in axis_fields):
            misaligned = True
        merged.append(largest)
    return TensorField(
        axes=tuple(merged),
        global_context=context or any(field.global_context for field in fields),
        misaligned=misaligned,
        approximate=approximate,
    )


def _elementwise(
    args: Sequence[Any], kwargs: dict[str, Any], out: torch.Tensor, inputs: _Inputs
) -> TensorField:
    """Operators that act position by position: the field follows the trailing spatial axes.

    Inputs whose spatial axes line up with the output's merge their fields; an input broadcast over
    them (a (N, C, 1, 1) scale) adds global context; a map flattened into (batch, features) keeps no
    layout. Anything else (spatial axes folded into a sequence, a layout-free tensor spread back over
    spatial axes) loses track.
    """
    aligned: list[TensorField] = []
    context = flattened = lost = approximate = False
    for tensor, field in inputs:
        approximate = approximate or field.approximate
        count = len(field.axes)
        if field.whole_input:
            context = True
        elif count and out.dim() >= count and tuple(tensor.shape[-count:]) == tuple(out.shape[-count:]):
            aligned.append(field)
        elif count and tensor.dim() >= count and all(size == 1 for size in tensor.shape[-count:]):
            context = True
        elif out.dim() <= 2 and tuple(out.shape[:1]) == tuple(tensor.shape[:1]):
            flattened = True  # (batch, features): no spatial layout any more
        else:
            lost = True
    if lost or (aligned and flattened) or len({len(field.axes) for field in aligned}) > 1:
        return _LOST
    if aligned:
        return _merge(aligned, context, approximate)
    if flattened:
        return TensorField(approximate=approximate)
    return replace(_WHOLE, approximate=approximate)


_SpatialRule = Callable[[TensorField, Sequence[Any], torch.Tensor], TensorField]


def _spatial_rule(rule: _SpatialRule) -> _Rule:
    """A rule for what an operator does to the spatial axes of its first argument, ``args[0]``.

    The wrapper says the common part once: an input without a field of its own falls back to the
    elementwise rule, and one that sees the whole input or has no spatial layout passes unchanged.
    """

    @functools.wraps(rule)
    def apply(
        args: Sequence[Any], kwargs: dict[str, Any], out: torch.Tensor, inputs: _Inputs
    ) -> TensorField | None:
        field = _field_of(args[0], inputs)
        if field is None or field.whole_input or not field.axes:
            return field
        return rule(field, args, out)

    return apply


def _window_rule(
    field: TensorField,
    kernel_size: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
) -> TensorField:
    """A sliding window (convolution, pooling): the Distill recurrence on every spatial axis."""
    if len(field.axes) != len(kernel_size):
        return _LOST
    axes = tuple(
        receptive_field_step(axis, kernel, step, pad, dil)
        for axis, kernel, step, pad, dil in zip(
            field.axes, kernel_size, stride, padding, dilation, strict=True
        )
    )
    return replace(field, axes=axes)


@_spatial_rule
def _convolution(field: TensorField, args: Sequence[Any], out: torch.Tensor) -> TensorField:
    weight: torch.Tensor = args[1]
    stride, padding, dilation, transposed = args[3], args[4], args[5], args[6]
    count = weight.dim() - 2
    kernel = list(weight.shape[2:])
    stride, padding, dilation = (_expand(value, count) for value in (stride, padding, dilation))
    if not transposed:
        return _window_rule(field, kernel, stride, padding, dilation)
    if len(field.axes) != count:
        return _LOST
    axes = tuple(
        _transposed_step(axis, k, s, p, d)
        for axis, k, s, p, d in zip(field.axes, kernel, stride, padding, dilation, strict=True)
    )
    return replace(field, axes=axes)


def _transposed_step(
    axis: ReceptiveField, kernel: int, stride: int, padding: int, dilation: int
) -> ReceptiveField:
    """Transposed convolution: output unit o gathers input units i = (o + p - t*d) / s for whole i.

    How many input units one output unit gathers depends on o mod s; the size is the largest over
    those residues. The jump shrinks to j/s; the centre of unit 0 sits at input unit (p - (k-1)d/2) / s.
    """
    widest = 0
    for residue in range(stride):
        taps = [tap for tap in range(kernel) if (residue - tap * dilation) % stride == 0]
        if taps:
            widest = max(widest, (taps[-1] - taps[0]) * dilation // stride)
    return ReceptiveField(
        size=axis.size + widest * axis.stride,
        stride=axis.stride / stride,
        start=axis.start + (padding - (kernel - 1) * dilation / 2) / stride * axis.stride,
    )


def _pool_rule(has_dilation: bool) -> _Rule:
    """max_pool(input, kernel, stride=[]=kernel, padding, dilation, ...) and avg_pool (no dilation)."""

    @_spatial_rule
    def rule(field: TensorField, args: Sequence[Any], out: torch.Tensor) -> TensorField:
        count = len(field.axes)
        kernel = _expand(args[1], count)
        stride = _expand(args[2], count) if len(args) > 2 and _expand(args[2], 1) else kernel
        padding = _expand(args[3], count) if len(args) > 3 else [0] * count
        dilation = _expand(args[4], count) if has_dilation and len(args) > 4 else [1] * count
        return _window_rule(field, kernel, stride, padding, dilation)

    return rule


@_spatial_rule
def _adaptive_pool(field: TensorField, args: Sequence[Any], out: torch.Tensor) -> TensorField:
    """Adaptive pooling resolved for the input at hand: window i spans [floor(iI/O), ceil((i+1)I/O))."""
    count = len(field.axes)
    in_sizes = list(args[0].shape[-count:])
    out_sizes = list(out.shape[-count:])
    if all(size == 1 for size in out_sizes) and any(size > 1 for size in in_sizes):
        return replace(_WHOLE, approximate=field.approximate)
    axes = []
    approximate = field.approximate
    for axis, in_size, out_size in zip(field.axes, in_sizes, out_sizes, strict=True):
        if in_size % out_size == 0:
            step = in_size // out_size
            axes.append(receptive_field_step(axis, step, step))
            continue
        widest = max(
            math.ceil((i + 1) * in_size / out_size) - (i * in_size) // out_size for i in range(out_size)
        )
        first_end = math.ceil(in_size / out_size)
        axes.append(
            ReceptiveField(
                size=axis.size + (widest - 1) * axis.stride,
                stride=axis.stride * in_size / out_size,
                start=axis.start + (first_end - 1) / 2 * axis.stride,
            )
        )
        approximate = True  # uneven windows: the distance between units is not constant
    return replace(field, axes=tuple(axes), approximate=approximate)


def _reduction(
    args: Sequence[Any], kwargs: dict[str, Any], out: torch.Tensor, inputs: _Inputs
) -> TensorField | None:
    """mean / sum / amax over dims: reducing a spatial axis makes every unit see the whole input."""
    field = _field_of(args[0], inputs)
    if field is None:
        return None
    source: torch.Tensor = args[0]
    dims = args[1] if len(args) > 1 and not isinstance(args[1], bool) else kwargs.get("dim")
    if dims is None or (not isinstance(dims, int) and not list(dims)):
        return replace(_WHOLE, approximate=field.approximate)
    dims = [dims] if isinstance(dims, int) else list(dims)
    first_spatial = source.dim() - len(field.axes)
    if field.axes and any(dim % source.dim() >= first_spatial for dim in dims):
        return replace(_WHOLE, approximate=field.approximate)
    return None


def _softmax(
    args: Sequence[Any], kwargs: dict[str, Any], out: torch.Tensor, inputs: _Inputs
) -> TensorField | None:
    field = _field_of(args[0], inputs)
    source: torch.Tensor = args[0]
    if field is not None and field.axes and args[1] % source.dim() >= source.dim() - len(field.axes):
        return replace(_WHOLE, approximate=field.approximate)
    return None


def _global(
    args: Sequence[Any], kwargs: dict[str, Any], out: torch.Tensor, inputs: _Inputs
) -> TensorField | None:
    """Matrix products (linear layers on flattened features) and attention: every unit sees everything."""
    return replace(_WHOLE, approximate=any(field.approximate for _, field in inputs))


@_spatial_rule
def _pad(field: TensorField, args: Sequence[Any], out: torch.Tensor) -> TensorField:
    """Padding moves the first unit by the amount added before it (pad list: last axis first)."""
    pad = list(args[1])
    count = len(field.axes)
    axes = []
    for index, axis in enumerate(field.axes):
        position = 2 * (count - 1 - index)
        before = pad[position] if position < len(pad) else 0
        axes.append(ReceptiveField(axis.size, axis.stride, axis.start - before * axis.stride))
    return replace(field, axes=tuple(axes))


def _interpolation_rule(extra_taps: int, half_pixel: bool = True) -> _Rule:
    """Resizing: the jump scales by in/out; linear modes reach one more input unit, cubic ones three.

    Unit o's centre is the source coordinate PyTorch computes: o * ratio for the legacy 'nearest' mode,
    (o + 1/2) * ratio - 1/2 (half-pixel centres) for 'nearest-exact' and the linear and cubic modes,
    o * (in - 1)/(out - 1) with align_corners. The ratio is 1/scale where the call carries a scale
    factor (PyTorch uses it even when the output size was rounded down), else in/out.
    """
    first_scale = 3 if extra_taps else 2  # linear and cubic modes take align_corners before the scales

    @_spatial_rule
    def rule(field: TensorField, args: Sequence[Any], out: torch.Tensor) -> TensorField:
        count = len(field.axes)
        align_corners = extra_taps > 0 and len(args) > 2 and args[2] is True
        scales = list(args[first_scale:])
        if len(scales) == 1 and isinstance(scales[0], (list, tuple)):  # the .vec overloads: one list
            scales = list(scales[0])
        scales = (scales + [None] * count)[:count]
        axes = []
        for axis, in_size, out_size, scale in zip(
            field.axes, args[0].shape[-count:], out.shape[-count:], scales, strict=True
        ):
            if align_corners and out_size > 1:
                ratio, offset = (in_size - 1) / (out_size - 1), 0.0
            else:
                ratio = 1 / scale if scale else in_size / out_size
                offset = 0.5 * ratio - 0.5 if half_pixel else 0.0
            axes.append(
                ReceptiveField(
                    size=axis.size + extra_taps * axis.stride,
                    stride=axis.stride * ratio,
                    start=axis.start + offset * axis.stride,
                )
            )
        return replace(field, axes=tuple(axes))

    return rule


@_spatial_rule
def _slice(field: TensorField, args: Sequence[Any], out: torch.Tensor) -> TensorField:
    """Cropping or striding a spatial axis moves the first unit and multiplies the jump."""
    source: torch.Tensor = args[0]
    dim = (args[1] if len(args) > 1 else 0) % source.dim()
    first_spatial = source.dim() - len(field.axes)
    if dim < first_spatial:
        return field
    length = source.shape[dim]
    start = args[2] if len(args) > 2 and args[2] is not None else 0
    start = max(0, min(start + length if start < 0 else start, length))
    step = args[4] if len(args) > 4 else 1
    axes = list(field.axes)
    axis = axes[dim - first_spatial]
    axes[dim - first_spatial] = ReceptiveField(
        axis.size, axis.stride * step, axis.start + start * axis.stride
    )
    return replace(field, axes=tuple(axes))


@_spatial_rule
def _reorder(field: TensorField, args: Sequence[Any], out: torch.Tensor) -> TensorField:
    """permute / transpose: harmless while the spatial axes stay last and in order, else track is lost."""
    ndim = args[0].dim()
    if len(args) == 2:
        order = [dim % ndim for dim in args[1]]
    else:
        order = list(range(ndim))
        first, second = args[1] % ndim, args[2] % ndim
        order[first], order[second] = order[second], order[first]
    count = len(field.axes)
    if order[ndim - count :] == list(range(ndim - count, ndim)):
        return field
    return _LOST


def _packets(*names: str) -> list[Any]:
    """The ATen overload packets of this torch build among ``names`` (some exist only on some builds)."""
    return [packet for name in names if (packet := getattr(aten, name, None)) is not None]


_RULES: dict[Any, _Rule] = {}
for _rule, _names in (
    (_convolution, ("convolution", "_convolution", "convolution_overrideable")),
    (_pool_rule(has_dilation=True), ("max_pool1d", "max_pool2d", "max_pool3d")),
    (_pool_rule(has_dilation=True), ("max_pool1d_with_indices", "max_pool2d_with_indices")),
    (_pool_rule(has_dilation=True), ("max_pool3d_with_indices",)),
    (_pool_rule(has_dilation=False), ("avg_pool1d", "avg_pool2d", "avg_pool3d")),
    (_adaptive_pool, ("_adaptive_avg_pool2d", "_adaptive_avg_pool3d", "adaptive_avg_pool1d")),
    (_adaptive_pool, ("adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d")),
    (_reduction, ("mean", "sum", "amax", "amin", "max", "min", "var", "std", "var_mean", "logsumexp")),
    (_softmax, ("_softmax", "_log_softmax")),
    (_global, ("mm", "addmm", "bmm", "baddbmm", "matmul", "linear", "_scaled_mm")),
    (_global, ("_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention")),
    (_global, ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_cudnn_attention")),
    (_global, ("_scaled_dot_product_fused_attention_overrideable", "_native_multi_head_attention")),
    (_global, ("_transformer_encoder_layer_fwd", "_efficient_attention_forward", "_flash_attention_forward")),
    (_pad, ("constant_pad_nd", "reflection_pad1d", "reflection_pad2d", "reflection_pad3d")),
    (_pad, ("replication_pad1d", "replication_pad2d", "replication_pad3d", "_pad_circular")),
    (_slice, ("slice",)),
    (_reorder, ("permute", "transpose")),
    (_interpolation_rule(0, half_pixel=False), ("upsample_nearest1d", "upsample_nearest2d")),
    (_interpolation_rule(0, half_pixel=False), ("upsample_nearest3d",)),
    (_interpolation_rule(0), ("_upsample_nearest_exact1d", "_upsample_nearest_exact2d")),
    (_interpolation_rule(0), ("_upsample_nearest_exact3d",)),
    (_interpolation_rule(1), ("upsample_linear1d", "upsample_bilinear2d", "upsample_trilinear3d")),
    (_interpolation_rule(1), ("_upsample_bilinear2d_aa",)),
    (_interpolation_rule(3), ("upsample_bicubic2d", "_upsample_bicubic2d_aa")),
):
    for _packet in _packets(*_names):
        _RULES[_packet] = _rule

# Operators without a rule that still act position by position (besides those PyTorch tags pointwise):
# the elementwise rule follows them. Reshapes are judged by their shapes there.
_POSITION_WISE = frozenset(
    _packets(
        "native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_no_training",
        "cudnn_batch_norm", "miopen_batch_norm", "native_layer_norm", "native_group_norm",
        "native_dropout", "hardswish", "hardswish_", "cat", "stack", "split", "split_with_sizes",
        "unbind", "chunk", "_to_copy", "copy", "copy_", "alias", "detach", "lift_fresh", "t",
        "view", "_unsafe_view", "reshape", "expand", "unsqueeze", "squeeze", "select", "contiguous",
    )
)  # fmt: skip

# Operators whose output does not depend on the values of their tensor inputs: it carries no field.
_VALUE_INDEPENDENT = frozenset(
    _packets(
        "empty_like", "zeros_like", "ones_like", "full_like", "rand_like", "randn_like", "randint_like",
        "new_empty", "new_empty_strided", "new_zeros", "new_ones", "new_full",
    )
)  # fmt: skip
