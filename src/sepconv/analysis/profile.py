"""One instrumented forward pass: every module call with its shapes, MACs and receptive field.

Forward pre/post hooks on every module keep a stack of the calls in progress; a ``TorchDispatchMode``
sees every ATen operator that runs (functional calls included) and

- adds its multiply-adds to the innermost module call in progress, using PyTorch's own formulas
  (``torch.utils.flop_counter``, the same ones ``FlopCounterMode`` uses; MACs = FLOPs / 2, since those
  formulas count a multiply-add as two FLOPs and bias additions not at all), and
- propagates receptive fields from its inputs to its outputs (:mod:`sepconv.analysis.fields`).

So the totals equal ``FlopCounterMode``'s, and each MAC is attributed to exactly one module call: the
leaf layer that ran it, or the container whose own ``forward`` called a functional op.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import flop_registry

from sepconv.analysis.fields import FieldTracker, TensorField, input_field

__all__ = ["ModelInputError", "ModuleCall", "profile_forward"]


@dataclass
class ModuleCall:
    """One call of one module during the profiled forward pass (a module called twice gives two)."""

    name: str
    module: nn.Module
    call_index: int
    order: int  # position in the sequence of calls entered (a pre-order of the call tree)
    parent: int | None  # order of the enclosing call, None for the model itself
    input_shapes: list[tuple[int, ...]]
    output_shapes: list[tuple[int, ...]] = field(default_factory=list)
    output_bytes: int = 0
    own_macs: int = 0
    field: TensorField | None = None
    last_descendant: int = -1  # order of the last call entered inside this one
    exit_order: int = -1  # position in the sequence of calls finished (a post-order)

    @property
    def depth(self) -> int:
        return 0 if not self.name else self.name.count(".") + 1

    @property
    def is_leaf(self) -> bool:
        return next(iter(self.module.children()), None) is None


class ModelInputError(ValueError):
    """The model failed on the given input; the message names the innermost layer and its input shapes."""


def _tensors(value: Any) -> list[torch.Tensor]:
    return [item for item in tree_flatten(value)[0] if isinstance(item, torch.Tensor)]


class _CountingMode(TorchDispatchMode):
    def __init__(self, recorder: _Recorder) -> None:
        super().__init__()
        self.recorder = recorder

    def __torch_dispatch__(self, func: Any, types: Any, args: Sequence[Any] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        packet = func._overloadpacket
        if packet not in flop_registry and not FieldTracker.handles(packet):
            # Same as FlopCounterMode: look inside composite operators for counted ones.
            with self:
                decomposed = func.decompose(*args, **kwargs)
            if decomposed is not NotImplemented:
                return decomposed
        out = func(*args, **kwargs)
        if packet in flop_registry:
            flops = flop_registry[packet](*args, **kwargs, out_val=out)
            self.recorder.add_macs(flops // 2)
        try:
            self.recorder.fields.propagate(func, args, kwargs, out)
        except Exception:  # a rule that cannot read this call's arguments: say "unknown", keep counting
            self.recorder.rule_failures.append(str(func))
            for tensor in _tensors(out):
                self.recorder.fields.set(tensor, TensorField(approximate=True))
        return out


class _Recorder:
    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.calls: list[ModuleCall] = []
        self.stack: list[ModuleCall] = []
        self.call_counts: dict[int, int] = {}
        self.fields = FieldTracker()
        self.unattributed_macs = 0
        self.rule_failures: list[str] = []
        self.finished = 0

    def add_macs(self, macs: int) -> None:
        if self.stack:
            self.stack[-1].own_macs += macs
        else:
            self.unattributed_macs += macs

    def hooks(self, name: str, module: nn.Module) -> list[Any]:
        def before(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            index = self.call_counts.get(id(module), 0)
            self.call_counts[id(module)] = index + 1
            call = ModuleCall(
                name=name,
                module=module,
                call_index=index,
                order=len(self.calls),
                parent=self.stack[-1].order if self.stack else None,
                input_shapes=[tuple(t.shape) for t in _tensors((args, kwargs))],
            )
            self.calls.append(call)
            self.stack.append(call)

        def after(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
            call = self.stack.pop()
            outputs = _tensors(output)
            call.output_shapes = [tuple(t.shape) for t in outputs]
            call.output_bytes = sum(t.numel() * t.element_size() for t in outputs)
            call.field = self.fields.get(outputs[0]) if outputs else None
            call.last_descendant = len(self.calls) - 1
            call.exit_order = self.finished
            self.finished += 1

        return [
            module.register_forward_pre_hook(before, with_kwargs=True),
            module.register_forward_hook(after, with_kwargs=True),
        ]


def profile_forward(model: nn.Module, inputs: Sequence[Any]) -> tuple[list[ModuleCall], Any, int]:
    """Run ``model(*inputs)`` once under instrumentation; returns (calls, output, MACs outside modules).

    Raises :class:`ModelInputError` naming the innermost module that was running when the model failed.
    """
    recorder = _Recorder(model)
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
    return recorder.calls, output, recorder.unattributed_macs


def _failure(recorder: _Recorder, inputs: Sequence[Any], error: Exception) -> ModelInputError:
    detail = " ".join(str(error).split()) or type(error).__name__
    if recorder.stack:
        call = recorder.stack[-1]
        where = f"'{call.name}'" if call.name else "the model's own forward"
        shapes = ", ".join(str(shape) for shape in call.input_shapes) or "no tensors"
        return ModelInputError(
            f"layer {where} ({type(call.module).__name__}) failed on input {shapes}: {detail}"
        )
    shapes = ", ".join(str(tuple(t.shape)) for t in _tensors(inputs))
    return ModelInputError(f"the model failed on input {shapes}: {detail}")
