"""How much memory a forward pass needs at a given input shape, estimated without allocating it.

Flags that scale a model's activations (batch sizes, input sizes) are checked with
:func:`sepconv.machine.require_memory` before the first real forward. The estimate comes from one
forward pass on the meta device (shapes only, nothing computed or allocated): the input plus the
largest module call (its arguments and the new tensors it returns). All exist at once during that
call, so the sum is a lower bound of the real peak, never more than the real allocation; a refusal based on it is never wrong.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["forward_bytes", "largest_call_bytes"]


def largest_call_bytes(
    model: nn.Module, input_shape: Sequence[int], *, dtype: torch.dtype | None = None
) -> int:
    """Bytes alive during the largest module call of ``model`` for an input of ``input_shape``, input aside.

    A module's call holds its tensor arguments (the caller keeps them) and the new tensors it returns;
    this is the largest such sum over all calls, leaving out the model's own input (the caller counts
    it) and outputs that are an argument or a view (an ``nn.Identity``, an in-place ReLU, a ``flatten``),
    which are not new memory. ``input_shape`` includes the batch (``(16, 3, 224, 224)``); ``dtype``
    defaults to that of the model's floating-point parameters. A model that cannot run on the meta
    device (a data-dependent branch, an operator without a meta kernel) gives 0: the estimate then
    counts the input alone and the real run reports its own error.

    >>> from torch import nn
    >>> largest_call_bytes(nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(inplace=True)), (2, 1, 10, 10))
    4096
    """
    from sepconv.analysis.summary import _meta_copy

    shape = tuple(input_shape)
    if dtype is None:
        dtype = next(
            (p.dtype for p in model.parameters() if p.is_floating_point()), torch.get_default_dtype()
        )
    meta = _meta_copy(model).eval()
    inputs = torch.empty(shape, device="meta", dtype=dtype)
    largest = 0

    def hook(module: nn.Module, args: tuple[object, ...], output: object) -> None:
        nonlocal largest
        held: dict[int, int] = {}  # the storage owner (a view's base) of each argument, by identity
        for item in torch.utils._pytree.tree_flatten(args)[0]:
            if isinstance(item, torch.Tensor):
                owner = item if item._base is None else item._base
                if owner is not inputs:
                    held[id(owner)] = owner.numel() * owner.element_size()
        created = 0
        for item in torch.utils._pytree.tree_flatten(output)[0]:
            if (
                isinstance(item, torch.Tensor)
                and item._base is None
                and id(item) not in held
                and item is not inputs
            ):
                created += item.numel() * item.element_size()
        largest = max(largest, sum(held.values()) + created)

    for module in meta.modules():
        module.register_forward_hook(hook)
    try:
        with torch.no_grad():
            meta(inputs)
    # Any failure here (an operator without a meta kernel, an input the model refuses) leaves the real
    # forward pass, which follows, to report it in its own words: the estimate falls back to the input.
    except Exception:
        return 0
    return largest


def forward_bytes(model: nn.Module, input_shape: Sequence[int], *, dtype: torch.dtype | None = None) -> int:
    """A lower bound of the memory one forward pass of ``model`` at ``input_shape`` allocates, in bytes.

    It counts the input tensor and the largest module call (:func:`largest_call_bytes`), which are alive
    together; weights, the other activations and the allocator's slack are left out.

    >>> from torch import nn
    >>> forward_bytes(nn.Conv2d(1, 8, 3), (2, 1, 10, 10))  # 2*1*10*10*4 + 2*8*8*8*4
    4896
    """
    if dtype is None:
        dtype = next(
            (p.dtype for p in model.parameters() if p.is_floating_point()), torch.get_default_dtype()
        )
    input_bytes = math.prod(input_shape) * torch.empty((), dtype=dtype).element_size()
    return input_bytes + largest_call_bytes(model, input_shape, dtype=dtype)
