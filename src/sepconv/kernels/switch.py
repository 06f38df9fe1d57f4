"""Switch the fused path of a model's blocks on or off (a per-block attribute, no global state)."""

from __future__ import annotations

from torch import nn

__all__ = ["count_fusable", "set_fused"]


def set_fused(model: nn.Module, enabled: bool) -> int:
    """Let every sepconv block in ``model`` use (or not) the fused kernels in training; returns how many.

    Blocks are the modules with a ``fused`` attribute (``ConvNormAct``, ``InvertedResidual``); other
    modules are untouched. The weights and the results (to float rounding) do not depend on the switch.
    """
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be True or False, got {enabled!r}")
    blocks = [module for module in model.modules() if isinstance(getattr(module, "fused", None), bool)]
    for block in blocks:
        # nn.Module's __setattr__ is typed for tensors and modules; a flag is set the generic way
        setattr(block, "fused", enabled)  # noqa: B010
    return len(blocks)


def count_fusable(model: nn.Module) -> int:
    """How many BatchNorm(+activation) pairs of ``model`` the fused kernels would run in training."""
    from sepconv.kernels.bn_act import fusable_pairs

    return sum(len(fusable_pairs(module)) for module in model.modules())
