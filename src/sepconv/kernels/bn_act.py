"""``batch_norm_act``: training-mode BatchNorm + activation as one custom operator, exact against autograd.

The operators are C++ (``csrc/bn_act.cpp``, registered with ``torch.library``): ``bn_act_train``, which
:func:`batch_norm_act` calls (forward, running statistics and its own autograd in C++, one dispatch per
call), and the functional pair ``bn_act_forward`` / ``bn_act_backward`` it is built on, to which this
module gives autograd and fake (meta) implementations for ``torch.compile`` / ``torch.export`` and
tests. :func:`batch_norm_act` falls back to
``F.batch_norm`` + the activation wherever the kernel does not apply (GPU tensors, no compiler,
inference mode), so callers never need to check.
"""

from __future__ import annotations

from typing import Any, TypeGuard

import torch
import torch.nn.functional as F
from torch import nn

from sepconv.kernels._build import loaded_with

__all__ = [
    "ACTIVATION_CODES",
    "activation_code",
    "batch_norm_act",
    "can_fuse",
    "fusable_pairs",
    "has_hooks",
    "kernels_available",
    "training_arguments",
]

#: The activations the fused C++ kernel knows, by module type, with the code it knows them by.
ACTIVATION_CODES: dict[type[nn.Module], int] = {
    nn.Identity: 0,
    nn.ReLU: 1,
    nn.ReLU6: 2,
    nn.SiLU: 3,
    nn.Hardswish: 4,
}
_PLAIN_ACTIVATIONS = {0: None, 1: F.relu, 2: F.relu6, 3: F.silu, 4: F.hardswish}
_KERNEL_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def activation_code(act: nn.Module | None) -> int | None:
    """The kernel's code for ``act`` (None counts as identity), or None if the kernel cannot run it.

    Only the exact classes count: a subclass may change ``forward``. ``nn.Hardtanh`` (ReLU6's base)
    and in-place activations are accepted only as ``ReLU6`` / ``ReLU(inplace=True)`` would behave.
    """
    if act is None:
        return 0
    code = ACTIVATION_CODES.get(type(act))
    if code == 2 and isinstance(act, nn.Hardtanh) and (act.min_val, act.max_val) != (0.0, 6.0):
        return None
    return code


def kernels_available() -> bool:
    """True when the C++ kernels are built and loaded (building them on first call, cached afterwards)."""
    return loaded_with(_register_python_parts)


def _register_python_parts() -> None:
    # Autograd and fake tensors for the C++ operator; registered once, after the library is loaded.
    def _forward_fake(
        input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float, act: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        stat_dtype = torch.float64 if input.dtype == torch.float64 else torch.float32
        channels = input.shape[1]
        return (
            torch.empty_like(input),
            input.new_empty((channels,), dtype=stat_dtype),
            input.new_empty((channels,), dtype=stat_dtype),
        )

    torch.library.register_fake("sepconv::bn_act_forward", _forward_fake)

    def _backward_fake(
        grad_output: torch.Tensor,
        input: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor,
        mean: torch.Tensor,
        var: torch.Tensor,
        eps: float,
        act: int,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return torch.empty_like(input), torch.empty_like(weight), torch.empty_like(bias)

    torch.library.register_fake("sepconv::bn_act_backward", _backward_fake)

    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Any, ...]) -> None:
        input, weight, bias, eps, act = inputs
        _, mean, var = output
        ctx.save_for_backward(input, weight, bias, mean, var)
        ctx.eps, ctx.act = eps, act

    def backward(ctx: Any, grad_y: torch.Tensor, grad_mean: Any, grad_var: Any) -> tuple[Any, ...]:
        input, weight, bias, mean, var = ctx.saved_tensors
        grad_input, grad_weight, grad_bias = torch.ops.sepconv.bn_act_backward(
            grad_y, input, weight, bias, mean, var, ctx.eps, ctx.act
        )
        return grad_input, grad_weight, grad_bias, None, None

    torch.library.register_autograd("sepconv::bn_act_forward", backward, setup_context=setup_context)


def has_hooks(module: nn.Module) -> bool:
    """True when ``module`` has a forward or backward hook of its own (a fused kernel would skip it)."""
    return bool(
        module._forward_hooks
        or module._forward_pre_hooks
        or module._backward_hooks
        or module._backward_pre_hooks
    )


def _global_hooks() -> bool:
    from torch.nn.modules import module as module_hooks

    return bool(
        module_hooks._global_forward_hooks
        or module_hooks._global_forward_pre_hooks
        or module_hooks._global_backward_hooks
        or module_hooks._global_backward_pre_hooks
    )


def can_fuse(norm: nn.Module, act: nn.Module | None) -> TypeGuard[nn.BatchNorm2d]:
    """True when ``act(norm(x))`` may run as :func:`batch_norm_act` in training, keeping every behaviour.

    ``norm`` must be exactly ``nn.BatchNorm2d`` (not SyncBatchNorm or a subclass) and ``act`` one of
    :data:`ACTIVATION_CODES` (or None); hooks on either module, FX tracing, ``torch.compile`` and
    TorchScript keep the plain modules, because they must see the modules' own calls. When it is
    True, ``norm`` is an ``nn.BatchNorm2d`` (the type checker learns it too).
    """
    if type(norm) is not nn.BatchNorm2d or activation_code(act) is None:
        return False
    if has_hooks(norm) or (act is not None and has_hooks(act)) or _global_hooks():
        return False
    tracing = torch.fx._symbolic_trace.is_fx_symbolic_tracing() or torch.compiler.is_compiling()
    return not (tracing or torch.jit.is_scripting())


def fusable_pairs(block: nn.Module) -> list[tuple[nn.Module, nn.Module | None]]:
    """The (norm, activation) pairs ``block`` itself would fuse (see ``ConvNormAct.norm_act_pair``)."""
    pair_of = getattr(block, "norm_act_pair", None)
    if pair_of is None:
        return []
    pair = pair_of()
    return [pair] if pair is not None and can_fuse(pair[0], pair[1]) else []


def _kernel_applies(x: torch.Tensor, weight: torch.Tensor | None) -> bool:
    return (
        x.dim() == 4
        and x.device.type == "cpu"
        and x.dtype in _KERNEL_DTYPES
        and (weight is None or weight.dtype in (torch.float32, torch.float64, x.dtype))
        and x.numel() > 0
        and not torch.is_inference_mode_enabled()
        and kernels_available()
    )


def batch_norm_act(
    x: torch.Tensor,
    norm: nn.BatchNorm2d,
    act: nn.Module | None,
) -> torch.Tensor:
    """``act(norm(x))`` for a BatchNorm2d in training mode, fused into one forward and one backward pass.

    Updates ``norm``'s running statistics and ``num_batches_tracked`` exactly as ``norm(x)`` would.
    Falls back to calling the modules when the kernel does not apply (see module docstring); the
    activation must have a code in :data:`ACTIVATION_CODES`.
    """
    code = activation_code(act)
    if code is None:
        raise ValueError(f"act must be one of {[c.__name__ for c in ACTIVATION_CODES]}, got {act!r}")
    if not norm.training or not _kernel_applies(x, norm.weight):
        out: torch.Tensor = norm(x)
        if act is None:
            return out
        activated: torch.Tensor = act(out)
        return activated
    # One call: forward, running statistics and autograd are C++ (bn_act_train in csrc/bn_act.cpp).
    output: torch.Tensor = torch.ops.sepconv.bn_act_train(x, *training_arguments(norm, x, x.shape[1]), code)
    return output


def training_arguments(
    norm: nn.BatchNorm2d, x: torch.Tensor, channels: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None, float, float]:
    """What the fused training operators take from ``norm`` for a batch ``x`` of ``channels`` channels:
    weight and bias (ones and zeros when not affine), running mean and variance (None when not
    tracked), momentum (counting the batch, as BatchNorm does) and eps.

    Raises ValueError, before counting the batch, when ``norm`` has another number of channels.
    """
    if norm.num_features != channels:
        raise ValueError(
            f"expected {norm.num_features} channels for {norm}, got input of shape {tuple(x.shape)}"
        )
    param_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    weight = norm.weight if norm.weight is not None else x.new_ones(channels, dtype=param_dtype)
    bias = norm.bias if norm.bias is not None else x.new_zeros(channels, dtype=param_dtype)
    tracked = norm.track_running_stats
    running_mean = norm.running_mean if tracked else None
    running_var = norm.running_var if tracked else None
    return weight, bias, running_mean, running_var, _momentum(norm), norm.eps


def _momentum(norm: nn.BatchNorm2d) -> float:
    # BatchNorm's own rule: count the batch, then use momentum, or 1/count for a cumulative average.
    if norm.track_running_stats and norm.num_batches_tracked is not None:
        norm.num_batches_tracked.add_(1)
        if norm.momentum is None:
            return 1.0 / float(norm.num_batches_tracked)
    return 0.0 if norm.momentum is None else float(norm.momentum)
