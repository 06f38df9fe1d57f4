"""One instrumented forward pass: every module call with its shapes, MACs and receptive field.

Forward pre/post hooks on every module keep a stack of the calls in progress; a ``TorchDispatchMode``
sees every ATen operator that runs (functional calls included) and

- adds its multiply-adds to the innermost module call in progress (:mod:`sepconv.analysis.costs`:
  PyTorch's own formulas, those of ``FlopCounterMode``, plus the fused attention kernels they miss), and
- propagates receptive fields from its inputs to its outputs (:mod:`sepconv.analysis.fields`).

So the totals equal ``FlopCounterMode``'s (and, for attention, those of the unfused path), and each MAC
is attributed to exactly one module call: the leaf layer that ran it, or the container whose own
``forward`` called a functional op.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from sepconv.analysis.costs import counts_macs, macs_of
from sepconv.analysis.fields import FieldTracker, TensorField, input_field

__all__ = ["ModelInputError", "ModuleCall", "profile_forward"]


@dataclass
class ModuleCall:
    """One call of one module during the profiled forward pass (a module called twice gives two)."""

    name: str
    module: nn.Module
    call_index: int
    order: int  # position in the sequence of calls entered (a pre-order of the call tree)
    input_shapes: list[tuple[int, ...]]
    output_shapes: list[tuple[int, ...]] = field(default_factory=list)
    output_bytes: int = 0
    own_macs: int = 0
    field: TensorField | None = None
    last_descendant: int = -1  # order of the last call entered inside this one
    exit_order: int = -1  # position in the sequence of calls finished (a post-order)

    @property
    def depth(self) -> int:
        """How deep the module sits (0 for the model itself, 1 for its children, and so on)."""
        return 0 if not self.name else self.name.count(".") + 1

    @property
    def is_leaf(self) -> bool:
        """True when the module has no children (a layer, not a container)."""
        return next(iter(self.module.children()), None) is None


class ModelInputError(ValueError):
    """The model failed on the given input; the message names the innermost layer and its input shapes."""


def _tensors(value: Any) -> list[torch.Tensor]:
    return [item for item in tree_flatten(value)[0] if isinstance(item, torch.Tensor)]


def _shape(tensor: torch.Tensor) -> tuple[int, ...]:
    """The shape; for a nested tensor (a transformer's fast path for padded batches) the largest sizes."""
    if tensor.is_nested:
        return (tensor.size(0), *(int(size) for size in tensor._nested_tensor_size().amax(0).tolist()))
    return tuple(tensor.shape)


class _CountingMode(TorchDispatchMode):  # type: ignore[no-untyped-call]  # untyped in torch
    def __init__(self, recorder: _Recorder) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.recorder = recorder

    def __torch_dispatch__(self, func: Any, types: Any, args: Sequence[Any] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if not self.recorder.stack:  # a global module hook's own work, before or after the model: not its
            return func(*args, **kwargs)
        packet = func._overloadpacket
        if not counts_macs(packet) and not FieldTracker.handles(packet):
            # Same as FlopCounterMode: look inside composite operators for counted ones.
            with self:
                decomposed = func.decompose(*args, **kwargs)
            if decomposed is not NotImplemented:
                return decomposed
        out = func(*args, **kwargs)
        self.recorder.stack[-1].own_macs += macs_of(func, args, kwargs, out)
        field = self.recorder.fields.propagate(func, args, kwargs, out)
        if field is not None and field.lost and self.recorder.tracking_lost_at is None:
            call = self.recorder.stack[-1]
            self.recorder.tracking_lost_at = f"{func._overloadpacket} in '{call.name or '(model)'}'"
        return out


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[ModuleCall] = []
        self.stack: list[ModuleCall] = []
        self.call_counts: dict[int, int] = {}
        self.fields = FieldTracker()
        self.tracking_lost_at: str | None = None  # where the first field was lost: "operator in 'layer'"
        self.finished = 0

    def hooks(self, name: str, module: nn.Module) -> list[Any]:
        def before(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            index = self.call_counts.get(id(module), 0)
            self.call_counts[id(module)] = index + 1
            call = ModuleCall(
                name=name,
                module=module,
                call_index=index,
                order=len(self.calls),
                input_shapes=[_shape(t) for t in _tensors((args, kwargs))],
            )
            self.calls.append(call)
            self.stack.append(call)

        def after(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
            call = self.stack.pop()
            outputs = _tensors(output)
            call.output_shapes = [_shape(t) for t in outputs]
            call.output_bytes = sum(t.numel() * t.element_size() for t in outputs)
            call.field = self.fields.get(outputs[0]) if outputs else None
            call.last_descendant = len(self.calls) - 1
            call.exit_order = self.finished
            self.finished += 1

        # Ours run first before and last after the module (user hooks included), so their ops count.
        return [
            module.register_forward_pre_hook(before, with_kwargs=True, prepend=True),
            module.register_forward_hook(after, with_kwargs=True),
        ]


def profile_forward(model: nn.Module, inputs: Sequence[Any]) -> tuple[list[ModuleCall], Any, str | None]:
    """Run ``model(*inputs)`` once under instrumentation; returns (calls, output, tracking lost at).

    The last is None when receptive fields were followed through every operator, else where the
    first one was lost (``"aten.permute in 'block.1'"``).

    Raises :class:`ModelInputError` naming the innermost module that was running when the model failed.
    """
    recorder = _Recorder()
    for tensor in _tensors(inputs):
        recorder.fields.set(tensor, input_field(tensor))
    handles = []
    for name, module in model.named_modules():
        handles.extend(recorder.hooks(name, module))
    try:
        with torch.no_grad(), _CountingMode(recorder):
            output = model(*inputs)
    except Exception as error:
        raise _failure(recorder, inputs, error) from error
    finally:
        for handle in handles:
            handle.remove()
    return recorder.calls, output, recorder.tracking_lost_at


def _failure(recorder: _Recorder, inputs: Sequence[Any], error: Exception) -> ModelInputError:
    detail = " ".join(str(error).split()) or type(error).__name__
    if recorder.stack:
        call = recorder.stack[-1]
        where = f"'{call.name}'" if call.name else "the model's own forward"
        shapes = ", ".join(str(shape) for shape in call.input_shapes) or "no tensors"
        return ModelInputError(
            f"layer {where} ({type(call.module).__name__}) failed on input {shapes}: {detail}"
        )
    shapes = ", ".join(str(_shape(t)) for t in _tensors(inputs))
    return ModelInputError(f"the model failed on input {shapes}: {detail}")
