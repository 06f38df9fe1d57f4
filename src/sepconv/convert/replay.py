"""The replay of conversions: which transforms a model file may name, and the loader that replays them.

Each conversion registers itself here (:func:`register_transform`) when :mod:`sepconv.convert` is
imported, and records itself on the models it returns (:func:`sepconv.io.record_transform`). A model
file stores those steps as data; :func:`load_model` hands this registry to :func:`sepconv.io.load_model`,
which replays each step by name after ``create_model`` and before the weights go in. The registry sits
here, above :mod:`sepconv.io`, so that io never has to import the conversions it replays.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from torch import nn

from sepconv.io import load_model as _load_model
from sepconv.io import save_model as _save_model
from sepconv.io.transforms import Transform, Transforms, find_transform

__all__ = ["TRANSFORMS", "get_transform", "list_transforms", "load_model", "register_transform", "save_model"]

_REGISTERED: dict[str, Transform] = {}
#: Every registered transform by name, read-only and always current: the steps a model file may name.
TRANSFORMS: Transforms = MappingProxyType(_REGISTERED)


def register_transform(name: str) -> Callable[[Transform], Transform]:
    """Decorator registering ``fn(model, **kwargs) -> model`` as the transform ``name``.

    Duplicate names are an error, so a file's step always means one function.
    """

    def decorate(transform: Transform) -> Transform:
        if name in _REGISTERED:
            raise ValueError(
                f"a transform named {name!r} is already registered ({_REGISTERED[name].__module__})"
            )
        _REGISTERED[name] = transform
        return transform

    return decorate


def list_transforms() -> list[str]:
    """Names of the registered transforms, sorted."""
    return sorted(_REGISTERED)


def get_transform(name: str) -> Transform:
    """The transform registered as ``name``; a ValueError listing the registered ones otherwise."""
    return find_transform(TRANSFORMS, name)


def save_model(
    model: nn.Module, path: str | os.PathLike[str], *, spec: Mapping[str, Any] | None = None
) -> Path:
    """:func:`sepconv.io.save_model`, accepting the registered transforms as the model's steps."""
    return _save_model(model, path, spec=spec, registry=TRANSFORMS)


def load_model(path: str | os.PathLike[str]) -> nn.Module:
    """:func:`sepconv.io.load_model`, replaying the registered transforms the file's recipe names."""
    return _load_model(path, registry=TRANSFORMS)
