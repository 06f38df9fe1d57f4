"""A model's recipe steps: the conversions applied to it since ``create_model``, recorded as data.

A conversion that changes a model's structure (``to_separable``) records itself on the models it
returns (:func:`record_transform`); a model file stores that list of ``{"name", "kwargs"}`` steps next
to the ``create_model`` recipe. ``sepconv.io`` knows no conversion itself and imports none: whoever
saves or loads a model with steps passes the table of :data:`Transforms` that may be replayed (sepconv's
own is :data:`sepconv.convert.replay.TRANSFORMS`, which :func:`sepconv.load_model` uses). Only names in
that table can be replayed: a file names code, it never holds it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from torch import nn

__all__ = [
    "NO_TRANSFORMS",
    "Transform",
    "Transforms",
    "find_transform",
    "model_transforms",
    "record_transform",
]

#: A function that replays one conversion step on a model and returns the result.
Transform = Callable[..., nn.Module]
#: Step name -> the function that replays it: what a model file's steps may name.
Transforms = Mapping[str, Transform]
#: No transforms: a model file with steps cannot be loaded with these.
NO_TRANSFORMS: Transforms = MappingProxyType({})


def find_transform(transforms: Transforms, name: str) -> Transform:
    """The transform ``name`` in ``transforms``; a ValueError listing the names there otherwise.

    >>> find_transform({}, "to_separable")
    Traceback (most recent call last):
    ...
    ValueError: unknown transform 'to_separable' (no transforms given to replay; sepconv.load_model replays sepconv.convert's)
    """
    if name in transforms:
        return transforms[name]
    if not transforms:
        raise ValueError(
            f"unknown transform {name!r} (no transforms given to replay; sepconv.load_model replays "
            "sepconv.convert's)"
        )
    raise ValueError(
        f"unknown transform {name!r} (registered: {', '.join(sorted(transforms))}); register it with "
        "register_transform"
    )


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
