"""Activation and normalization layers named by string, class or callable.

Blocks take ``act_layer="relu6"`` or ``norm_layer=nn.GroupNorm``-style factories instead of
hard-coding them, so a block is configured rather than rewritten.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torch import nn

from sepconv.errors import ArgumentTypeError

__all__ = ["ACTIVATIONS", "NORMALIZATIONS", "ActLayer", "NormLayer", "make_act", "make_norm"]

#: An activation: a name from :data:`ACTIVATIONS`, a class or callable that builds one, or None.
ActLayer = str | Callable[[], nn.Module] | None
#: A normalization: a name from :data:`NORMALIZATIONS`, a callable taking the channels, or None.
NormLayer = str | Callable[[int], nn.Module] | None

#: The activations ``act_layer`` may name.
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "hardswish": nn.Hardswish,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "gelu": nn.GELU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "identity": nn.Identity,
}

#: The normalizations ``norm_layer`` may name.
NORMALIZATIONS: dict[str, Callable[[int], nn.Module]] = {
    "batchnorm": nn.BatchNorm2d,
    "bn": nn.BatchNorm2d,
    "instancenorm": partial(nn.InstanceNorm2d, affine=True),
    "groupnorm": lambda channels: nn.GroupNorm(min(32, channels), channels),
    "identity": lambda channels: nn.Identity(),
}


def make_act(act_layer: ActLayer) -> nn.Module | None:
    """Instantiate an activation: a name from ``ACTIVATIONS``, a class/callable, or None for none."""
    if act_layer is None:
        return None
    if isinstance(act_layer, str):
        if act_layer.lower() not in ACTIVATIONS:
            raise ValueError(
                f"act_layer must be one of {sorted(ACTIVATIONS)} or a callable, got {act_layer!r}"
            )
        return ACTIVATIONS[act_layer.lower()]()
    if not callable(act_layer):
        raise ArgumentTypeError(f"act_layer must be a name, a class or a callable, got {act_layer!r}")
    return act_layer()


def make_norm(norm_layer: NormLayer, num_features: int) -> nn.Module | None:
    """Instantiate a normalization over ``num_features`` channels, or None for none."""
    if norm_layer is None:
        return None
    if isinstance(norm_layer, str):
        if norm_layer.lower() not in NORMALIZATIONS:
            raise ValueError(
                f"norm_layer must be one of {sorted(NORMALIZATIONS)} or a callable, got {norm_layer!r}"
            )
        return NORMALIZATIONS[norm_layer.lower()](num_features)
    if not callable(norm_layer):
        raise ArgumentTypeError(f"norm_layer must be a name, a class or a callable, got {norm_layer!r}")
    return norm_layer(num_features)
