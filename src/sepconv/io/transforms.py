"""Post-build model transforms: how a model file rebuilds a converted architecture.

A conversion that changes a model's structure (``to_separable``) registers itself with
:func:`register_transform` and records itself on the models it returns (:func:`record_transform`).
A model file stores that list of steps next to the ``create_model`` recipe, and loading replays them
before the weights go in. Only registered names can be replayed: a file names code, it never holds it.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from typing import Any

from torch import nn

__all__ = [
    "Transform",
    "get_transform",
    "list_transforms",
    "model_transforms",
    "record_transform",
    "register_transform",
]

Transform = Callable[..., nn.Module]
_TRANSFORMS: dict[str, Transform] = {}


def register_transform(name: str) -> Callable[[Transform], Transform]:
    """Decorator registering ``fn(model, **kwargs) -> model`` as the transform ``name``.

    Duplicate names are an error, so a file's step always means one function.
    """

    def decorate(transform: Transform) -> Transform:
        if name in _TRANSFORMS:
            raise ValueError(
                f"a transform named {name!r} is already registered ({_TRANSFORMS[name].__module__})"
            )
        _TRANSFORMS[name] = transform
        return transform

    return decorate


def list_transforms() -> list[str]:
    """Names of the registered transforms (after importing :mod:`sepconv.convert`, if present)."""
    _import_conversions()
    return sorted(_TRANSFORMS)


def get_transform(name: str) -> Transform:
    """The transform registered as ``name``; a ValueError listing the registered ones otherwise."""
    if name not in _TRANSFORMS:
        _import_conversions()
    if name not in _TRANSFORMS:
        known = ", ".join(sorted(_TRANSFORMS)) or "none"
        raise ValueError(
            f"unknown transform {name!r} (registered: {known}); register it with register_transform"
        )
    return _TRANSFORMS[name]


def model_transforms(model: nn.Module) -> list[dict[str, Any]]:
    """The transforms applied to ``model`` since ``create_model``, oldest first (``[]`` if none)."""
    return [dict(step) for step in getattr(model, "_sepconv_transforms", [])]


def record_transform(model: nn.Module, source: nn.Module, name: str, **kwargs: Any) -> nn.Module:
    """Mark ``model`` as ``source`` transformed by ``name(**kwargs)``: copies the recipe, appends the step.

    >>> from sepconv.models import create_model, model_spec
    >>> source = create_model("separable_cnn", widths=(4, 4, 4, 4))
    >>> converted = record_transform(nn.Sequential(), source, "example", factor=2)
    >>> model_spec(converted)["name"], model_transforms(converted)
    ('separable_cnn', [{'name': 'example', 'kwargs': {'factor': 2}}])
    """
    spec = getattr(source, "_sepconv_spec", None)
    # setattr: nn.Module's __setattr__ is typed for tensors and modules only
    if spec is not None:
        setattr(model, "_sepconv_spec", {"name": spec["name"], "kwargs": dict(spec["kwargs"])})  # noqa: B010
    setattr(model, "_sepconv_transforms", [*model_transforms(source), {"name": name, "kwargs": dict(kwargs)}])  # noqa: B010
    return model


def _import_conversions() -> None:
    # Conversions register their transforms when imported; import them lazily so that this module
    # does not depend on sepconv.convert (which sits above it), and only if it exists.
    if importlib.util.find_spec("sepconv.convert") is not None:
        importlib.import_module("sepconv.convert")
