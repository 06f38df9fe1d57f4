"""An independent MAC count for the cost tests: layer by layer, from the shapes PyTorch produced.

Forward hooks on every convolution and linear layer read the shapes each call saw; the per-layer
formulas of :mod:`sepconv.arithmetic` (convolutions, given the layer's channels, kernel and groups)
or a product written here (linear layers: rows x in x out) are summed. ``summarize`` counts another
way (ATen operators under a dispatch mode, torch's ``flop_registry`` formulas), so agreement to the
last MAC checks one against the other. Convolutions and linear layers must be the only layers with
weight matrices, so no other layer can hide multiply-adds from this count.

Also here, for the attention tests: :class:`OperatorLog`, the ATen operators a call runs with their
MACs by sepconv's own formulas, and :func:`mha_by_hand`, multi-head attention's MACs worked by hand.
"""

from __future__ import annotations

import collections

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from sepconv import arithmetic
from sepconv.analysis.costs import macs_of


def macs_from_layer_formulas(model: nn.Module, shape: tuple[int, ...]) -> int:
    """Multiply-adds of one forward pass of ``model`` (left in eval mode), summed layer by layer."""
    weighted = [m for m in model.modules() if any(p.dim() > 1 for p in m.parameters(recurse=False))]
    kinds = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
    assert all(isinstance(m, kinds) for m in weighted), [type(m).__name__ for m in weighted]
    total = 0

    def count(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Linear):
            rows = inputs[0].numel() // module.in_features
            total += rows * module.in_features * module.out_features
        elif isinstance(module, nn.ConvTranspose2d):
            batch, _, height, width = inputs[0].shape
            total += arithmetic.conv_transpose_macs(
                module.in_channels, module.out_channels, module.kernel_size, (height, width),
                groups=module.groups, batch_size=batch,
            )  # fmt: skip
        else:
            batch, _, height, width = output.shape
            total += arithmetic.conv_macs(
                module.in_channels, module.out_channels, module.kernel_size, (height, width),
                groups=module.groups, batch_size=batch,
            )  # fmt: skip

    handles = [module.register_forward_hook(count) for module in weighted]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(shape))
    finally:
        for handle in handles:
            handle.remove()
    return total


class OperatorLog(TorchDispatchMode):
    """The ATen operators a call runs, and their MACs by sepconv's formulas (no module hooks involved)."""

    def __init__(self) -> None:
        super().__init__()
        self.operators: collections.Counter[str] = collections.Counter()
        self.macs = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.operators[str(func._overloadpacket)] += 1
        self.macs += macs_of(func, args, kwargs, out)
        return out


def mha_by_hand(batch: int, queries: int, keys: int, embed: int) -> int:
    """Projections of queries (L*E*E), keys and values (2*S*E*E), Q K^T (L*S*E over all heads),
    A V (L*S*E), output projection (L*E*E); per sequence, times the batch."""
    return batch * (
        queries * embed * embed + 2 * keys * embed * embed + 2 * queries * keys * embed + queries * embed**2
    )
