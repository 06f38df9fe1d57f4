"""BatchNorm with statistics over every process of a run, on CPU too (gloo).

With DDP each process normalises its share of the global batch; unless the statistics are shared, N
processes train a different network than one process with the same global batch (each sees noisier,
half-batch statistics). PyTorch's ``nn.SyncBatchNorm`` does the sharing on GPUs only (DDP refuses it on
CPU), so on CPU we use :class:`DistributedBatchNorm`: the same maths, with ``all_reduce`` of the
per-channel sums in the forward pass (mean, variance) and in the backward pass (the two gradient sums
that couple the samples of a batch).

The conversion swaps the class of each ``nn.BatchNorm1d/2d/3d`` in place (the subclasses add no state),
so parameters, buffers and ``state_dict`` keys are untouched; :func:`restore_batchnorm` swaps back.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["DistributedBatchNorm", "restore_batchnorm", "use_distributed_batchnorm"]


def _all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


class _DistributedNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float
    ):
        dims = [dim for dim in range(x.ndim) if dim != 1]
        shape = [1, -1] + [1] * (x.ndim - 2)
        # Sums in float64: sum of squares minus squared sum loses digits in float32 over large batches.
        wide = x.double()
        count = torch.tensor([x.numel() / x.shape[1]], dtype=torch.float64)
        stats = _all_reduce_sum(torch.cat([wide.sum(dims), (wide * wide).sum(dims), count]))
        channels = x.shape[1]
        total = stats[-1]
        mean = stats[:channels] / total
        variance = (stats[channels : 2 * channels] / total - mean * mean).clamp_min(0)
        inverse_std = torch.rsqrt(variance + eps)
        # As PyTorch's BatchNorm under autocast: a bf16/fp16 input is normalised, scaled and shifted in
        # float32 and rounded once, to the input's dtype (the parameters stay float32).
        compute = torch.promote_types(x.dtype, torch.float32)
        normalized = ((wide - mean.view(shape)) * inverse_std.view(shape)).to(compute)
        ctx.save_for_backward(normalized, inverse_std.to(compute), weight)
        ctx.total = total
        ctx.input_dtype = x.dtype
        ctx.bias_dtype = None if bias is None else bias.dtype
        output = normalized
        if weight is not None:
            output = output * weight.to(compute).view(shape)
        if bias is not None:
            output = output + bias.to(compute).view(shape)
        # mean and variance stay float64: the caller rounds them once, to the running buffers' dtype.
        ctx.mark_non_differentiable(mean, variance, total)
        return output.to(x.dtype), mean, variance, total

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor, *unused: Any):
        normalized, inverse_std, weight = ctx.saved_tensors
        dims = [dim for dim in range(grad_output.ndim) if dim != 1]
        shape = [1, -1] + [1] * (grad_output.ndim - 2)
        grad = grad_output.to(normalized.dtype)
        local_sum = grad.sum(dims)
        local_dot = (grad * normalized).sum(dims)
        # The weight and bias gradients stay local: DDP averages them over the processes afterwards.
        grad_weight = local_dot.to(weight.dtype) if weight is not None and ctx.needs_input_grad[1] else None
        grad_bias = local_sum.to(ctx.bias_dtype) if ctx.needs_input_grad[2] else None
        grad_input = None
        if ctx.needs_input_grad[0]:
            sums = _all_reduce_sum(torch.cat([local_sum, local_dot]).double())
            channels = local_sum.numel()
            mean_grad = (sums[:channels] / ctx.total).to(grad.dtype)
            mean_dot = (sums[channels:] / ctx.total).to(grad.dtype)
            scale = inverse_std if weight is None else inverse_std * weight.to(grad.dtype)
            grad_input = scale.view(shape) * (
                grad - mean_grad.view(shape) - normalized * mean_dot.view(shape)
            )
            grad_input = grad_input.to(ctx.input_dtype)
        return grad_input, grad_weight, grad_bias, None


class DistributedBatchNorm(nn.modules.batchnorm._BatchNorm):
    """A BatchNorm whose training-mode statistics cover the whole global batch of all processes.

    In eval mode, or without an initialised process group, it is the plain BatchNorm it replaced.
    """

    _base: type[nn.Module] = nn.BatchNorm2d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalize ``x`` with the statistics of all processes' batches, and update the running ones.

        In eval mode or without a process group it is the plain BatchNorm.
        """
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return self._base.forward(self, x)
        output, mean, variance, total = _DistributedNormFunction.apply(x, self.weight, self.bias, self.eps)
        # (with track_running_stats the three buffers exist; the checks tell the type checker)
        if (
            self.track_running_stats
            and self.running_mean is not None
            and self.running_var is not None
            and self.num_batches_tracked is not None
        ):
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                unbiased = variance * (total / (total - 1)) if total > 1 else variance
                # In the buffers' dtype (float32 under bf16 autocast too), as plain BatchNorm keeps them.
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
        return output


_SUBCLASSES: dict[type[nn.Module], type[nn.Module]] = {
    base: type(f"Distributed{base.__name__}", (DistributedBatchNorm, base), {"_base": base})
    for base in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
}


def use_distributed_batchnorm(model: nn.Module) -> int:
    """Make every plain ``nn.BatchNorm1d/2d/3d`` of ``model`` a distributed one, in place; returns how many."""
    converted = 0
    for module in model.modules():
        if type(module) in _SUBCLASSES:
            module.__class__ = _SUBCLASSES[type(module)]
            converted += 1
    return converted


def restore_batchnorm(model: nn.Module) -> None:
    """Undo :func:`use_distributed_batchnorm` (the model then pickles and exports as plain PyTorch)."""
    for module in model.modules():
        if isinstance(module, DistributedBatchNorm):
            module.__class__ = type(module)._base  # type: ignore[assignment]  # mypy cannot follow a class change
