"""A model file's recipe: what it may say, and the model it describes, worked out without allocating it.

The recipe, ``{"spec": {"name", "kwargs"}, "transforms": [{"name", "kwargs"}, ...]}``, is untrusted
input: a few hundred bytes of JSON can ask for a model of billions of parameters. So before anything
real is built, :func:`check_recipe` accepts only registered names and plain, finite JSON arguments,
and :func:`expected_tensors` builds the model on PyTorch's ``meta`` device (shapes and dtypes, no
storage) to learn which tensors it would need, for the caller to compare with the file's header.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from sepconv.io.transforms import get_transform

__all__ = [
    "MAX_RECIPE_CHARS",
    "TensorSpec",
    "check_recipe",
    "expected_tensors",
    "expected_ties",
    "rebuild",
    "tied_names",
]

# sepconv's own recipes are a few hundred characters; the cap bounds the work a recipe can ask of the
# meta build (e.g. a list of thousands of layer settings), which no header check can catch earlier.
MAX_RECIPE_CHARS = 65_536
# In the fallback build (see _MetaUnlessSmall), tensors up to this many elements get real storage.
_SMALL_NUMEL = 4096

TensorSpec = tuple[tuple[int, ...], torch.dtype]


def check_recipe(document: Mapping[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The ``(spec, transforms)`` of a recipe, or a ValueError saying what is wrong with it.

    Accepts a registered model name (:func:`sepconv.models.list_models`), registered transform names,
    and arguments that are plain JSON (strings, booleans, null, finite numbers, lists, objects).
    """
    from sepconv.models import list_models

    spec, transforms = document.get("spec"), document.get("transforms", [])
    _check_step("spec", spec)
    if spec["name"] not in list_models():
        raise ValueError(f"its recipe names the model {spec['name']!r}, which is not a registered model")
    if not isinstance(transforms, list):
        raise ValueError(f"its recipe's transforms must be a list, got {transforms!r:.200}")
    for index, step in enumerate(transforms):
        _check_step(f"transforms[{index}]", step)
        get_transform(step["name"])
    return {"name": spec["name"], "kwargs": dict(spec["kwargs"])}, [dict(step) for step in transforms]


def _check_step(where: str, step: Any) -> None:
    if not (isinstance(step, dict) and set(step) == {"name", "kwargs"} and isinstance(step["name"], str)):
        raise ValueError(f"its recipe's {where} must be {{'name': str, 'kwargs': dict}}, got {step!r:.200}")
    if not isinstance(step["kwargs"], dict):
        raise ValueError(f"its recipe's {where} kwargs must be a dict, got {step['kwargs']!r:.200}")
    _check_plain(f"{where} kwargs", step["kwargs"])


def _check_plain(where: str, value: Any) -> None:
    # json.loads accepts NaN and Infinity; a model argument never needs them.
    if value is None or isinstance(value, bool | str | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"its recipe's {where} holds {value!r}; numbers must be finite")
        return
    if isinstance(value, list):
        for index, item in enumerate(value):
            _check_plain(f"{where}[{index}]", item)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            _check_plain(f"{where}[{key!r}]", item)
        return
    raise ValueError(f"its recipe's {where} holds {value!r:.200}, which is not plain JSON")


def rebuild(spec: Mapping[str, Any], transforms: list[dict[str, Any]]) -> nn.Module:
    """``create_model(spec)`` then each transform, with the recipe recorded on the result."""
    from sepconv.models import create_model

    model = create_model(spec["name"], **spec["kwargs"])
    for step in transforms:
        model = get_transform(step["name"])(model, **step["kwargs"])
    model._sepconv_spec = {"name": spec["name"], "kwargs": dict(spec["kwargs"])}
    model._sepconv_transforms = [dict(step) for step in transforms]
    return model


def expected_tensors(spec: Mapping[str, Any], transforms: list[dict[str, Any]]) -> dict[str, TensorSpec]:
    """Name -> (shape, dtype) of the ``state_dict`` the recipe's model has, without allocating it.

    Builds the model under ``torch.device("meta")``. A builder that reads tensor values while it
    builds (torchvision's RegNets compute their widths with tensors) cannot run there; it is retried
    with only its large tensors on ``meta``. The builders' own errors (TypeError, ValueError, ...)
    propagate, for the caller to report against the file.
    """
    state = _meta_build(spec, transforms).state_dict()
    return {name: (tuple(tensor.shape), tensor.dtype) for name, tensor in state.items()}


def expected_ties(spec: Mapping[str, Any], transforms: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    """The :func:`tied_names` of the recipe's model, built without allocating it (as expected_tensors)."""
    return tied_names(_meta_build(spec, transforms).state_dict())


def tied_names(state: Mapping[str, torch.Tensor]) -> list[tuple[str, ...]]:
    """Groups of ``state_dict`` names whose tensors share memory (tied weights, aliasing buffers), sorted.

    Works on the ``meta`` device too: the grouping is by storage object, not by address.

    >>> layer = nn.Linear(2, 2)
    >>> module = nn.ModuleDict({"a": layer, "b": layer})
    >>> tied_names(module.state_dict())
    [('a.bias', 'b.bias'), ('a.weight', 'b.weight')]
    """
    groups: dict[int, list[str]] = {}
    for name, tensor in state.items():
        if tensor.numel():
            # _cdata identifies the storage itself (meta tensors have no address to compare).
            groups.setdefault(tensor.untyped_storage()._cdata, []).append(name)
    return sorted(tuple(sorted(names)) for names in groups.values() if len(names) > 1)


def _meta_build(spec: Mapping[str, Any], transforms: list[dict[str, Any]]) -> nn.Module:
    try:
        with torch.device("meta"):
            return rebuild(spec, transforms)
    except NotImplementedError:  # "Cannot copy out of meta tensor": the builder needed real values
        with _MetaUnlessSmall():
            return rebuild(spec, transforms)


class _MetaUnlessSmall(TorchFunctionMode):
    """Like ``torch.device("meta")``, but tensors of at most ``_SMALL_NUMEL`` elements get real storage.

    Small tensors are what a builder computes with (a few widths); parameters of any size that
    matters stay on ``meta``, so the memory used stays bounded whatever the recipe asks for.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        from torch.utils._device import _device_constructors  # the list torch.device("meta") uses

        kwargs = kwargs or {}
        if func in _device_constructors() and kwargs.get("device") is None:
            meta = func(*args, **{**kwargs, "device": "meta"})
            if meta.numel() > _SMALL_NUMEL:
                return meta
        return func(*args, **kwargs)
