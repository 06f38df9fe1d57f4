"""A model file's recipe: what it may say, and the model it describes, worked out without allocating it.

The recipe, ``{"spec": {"name", "kwargs"}, "transforms": [{"name", "kwargs"}, ...]}``, is untrusted
input: a few hundred bytes of JSON can ask for a model of billions of parameters, or for a billion
blocks. So before anything real is built, :func:`check_recipe` accepts only registered names and plain,
finite JSON arguments within the bounds below (nesting, list lengths, numbers, transform steps), and
:func:`expected_tensors` builds the model on PyTorch's ``meta`` device (shapes and dtypes, no storage)
to learn which tensors it would need, for the caller to compare with the file's header. The meta build
itself is bounded too: it stops at the first module beyond :data:`MAX_RECIPE_MODULES` or parameter
beyond :data:`MAX_RECIPE_PARAMETERS`, whatever in the arguments asked for it.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from sepconv.io.transforms import NO_TRANSFORMS, Transforms, find_transform

__all__ = [
    "MAX_RECIPE_CHARS",
    "MAX_RECIPE_DEPTH",
    "MAX_RECIPE_ITEMS",
    "MAX_RECIPE_MODULES",
    "MAX_RECIPE_NUMBER",
    "MAX_RECIPE_PARAMETERS",
    "MAX_RECIPE_TRANSFORMS",
    "RecipeLimitError",
    "TensorSpec",
    "check_recipe",
    "describe_spec",
    "expected_tensors",
    "expected_ties",
    "rebuild",
    "tied_names",
]

# sepconv's own recipes are a few hundred characters; the cap bounds the work a recipe can ask of the
# meta build (e.g. a list of thousands of layer settings), which no header check can catch earlier.
#: The longest recipe accepted: sepconv's own are a few hundred characters.
MAX_RECIPE_CHARS = 65_536
# The counts inside it, checked before the meta build. sepconv's and torchvision's builders need
# arguments nested 2 deep (mobilenet_v2's inverted_residual_setting), lists of at most a few hundred
# items (a conversion's ranks, one per layer) and numbers far below a million (widths, classes).
#: How deep a recipe's values may nest.
MAX_RECIPE_DEPTH = 8
#: The most items a list in a recipe may hold.
MAX_RECIPE_ITEMS = 4096
#: The largest number a recipe may hold.
MAX_RECIPE_NUMBER = 2**20
#: The most conversion steps a model file may list.
MAX_RECIPE_TRANSFORMS = 16
# What the meta build may construct. torchvision's largest models have 1,409 modules
# (efficientnet_v2_l) and 644 million parameters (regnet_y_128gf); a conversion adds a few modules
# per layer. Each meta module costs ~4 KB and ~0.1 ms (0.5 ms on a busy 2-core machine: 20,000 took
# 9.8 s and 74 MB there), so the module bound keeps a hostile recipe's meta build to a few seconds
# and tens of MB.
#: The most modules a recipe may build, so a hostile file cannot make loading take long.
MAX_RECIPE_MODULES = 10_000
#: The most parameters a recipe may build.
MAX_RECIPE_PARAMETERS = 2**32
# In the fallback build (see _MetaUnlessSmall), tensors up to this many elements get real storage.
_SMALL_NUMEL = 4096

#: A tensor's shape and dtype.
TensorSpec = tuple[tuple[int, ...], torch.dtype]


class RecipeLimitError(ValueError):
    """A recipe that asks for more than a model file may describe (see the ``MAX_RECIPE_*`` bounds)."""


def check_recipe(
    document: Mapping[str, Any], *, registry: Transforms = NO_TRANSFORMS
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The ``(spec, transforms)`` of a recipe, or a ValueError saying what is wrong with it.

    Accepts a registered model name (:func:`sepconv.models.list_models`), transform names in ``registry``
    (the transforms the caller can replay: :data:`sepconv.convert.replay.TRANSFORMS` for sepconv's own),
    and arguments that are plain JSON (strings, booleans, null, finite numbers, lists, objects), at
    most :data:`MAX_RECIPE_TRANSFORMS` transforms, and arguments nested at most :data:`MAX_RECIPE_DEPTH`
    deep, with lists and objects of at most :data:`MAX_RECIPE_ITEMS` items and numbers of magnitude at
    most :data:`MAX_RECIPE_NUMBER` (a :class:`RecipeLimitError` naming the argument otherwise).
    """
    from sepconv.models import list_models

    spec = _check_step("spec", document.get("spec"))
    transforms = document.get("transforms", [])
    if spec["name"] not in list_models():
        raise ValueError(f"its recipe names the model {spec['name']!r}, which is not a registered model")
    if not isinstance(transforms, list):
        raise ValueError(f"its recipe's transforms must be a list, got {transforms!r:.200}")
    if len(transforms) > MAX_RECIPE_TRANSFORMS:
        raise RecipeLimitError(
            f"its recipe's transforms hold {len(transforms):,} steps, more than the {MAX_RECIPE_TRANSFORMS} "
            f"a model file may replay (MAX_RECIPE_TRANSFORMS)"
        )
    for index, step in enumerate(transforms):
        _check_step(f"transforms[{index}]", step)
        find_transform(registry, step["name"])
    return {"name": spec["name"], "kwargs": dict(spec["kwargs"])}, [dict(step) for step in transforms]


def _check_step(where: str, step: Any) -> dict[str, Any]:
    """``step`` itself once it is a well-formed ``{"name": str, "kwargs": dict}`` of plain JSON."""
    if not (isinstance(step, dict) and set(step) == {"name", "kwargs"} and isinstance(step["name"], str)):
        raise ValueError(f"its recipe's {where} must be {{'name': str, 'kwargs': dict}}, got {step!r:.200}")
    if not isinstance(step["kwargs"], dict):
        raise ValueError(f"its recipe's {where} kwargs must be a dict, got {step['kwargs']!r:.200}")
    _check_plain(f"{where} kwargs", step["kwargs"], depth=0)
    return step


def _check_plain(where: str, value: Any, *, depth: int) -> None:
    # Every count that can drive construction is bounded here, before anything is built: a builder
    # loops over a list's items and up to its numbers (a block count of 10**9 would run for hours).
    if value is None or isinstance(value, bool | str):
        return
    if isinstance(value, int | float):
        # json.loads accepts NaN and Infinity; a model argument never needs them.
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"its recipe's {where} holds {value!r}; numbers must be finite")
        if abs(value) > MAX_RECIPE_NUMBER:
            raise RecipeLimitError(
                f"its recipe's {where} is {value!r:.40}, beyond the +-{MAX_RECIPE_NUMBER:,} a recipe's "
                f"numbers may be (MAX_RECIPE_NUMBER)"
            )
        return
    if isinstance(value, list | dict):
        if depth >= MAX_RECIPE_DEPTH:
            raise RecipeLimitError(
                f"its recipe's {where} nests lists or objects more than {MAX_RECIPE_DEPTH} deep "
                f"(MAX_RECIPE_DEPTH)"
            )
        if len(value) > MAX_RECIPE_ITEMS:
            raise RecipeLimitError(
                f"its recipe's {where} holds {len(value):,} items, more than the {MAX_RECIPE_ITEMS:,} a "
                f"recipe's lists and objects may hold (MAX_RECIPE_ITEMS)"
            )
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            _check_plain(f"{where}[{key!r}]", item, depth=depth + 1)
        return
    raise ValueError(f"its recipe's {where} holds {value!r:.200}, which is not plain JSON")


def rebuild(
    spec: Mapping[str, Any], transforms: list[dict[str, Any]], *, registry: Transforms = NO_TRANSFORMS
) -> nn.Module:
    """``create_model(spec)`` then each transform step, replayed by ``registry``'s function of its name,
    with the recipe recorded on the result."""
    from sepconv.models import create_model

    model = create_model(spec["name"], **spec["kwargs"])
    for step in transforms:
        model = find_transform(registry, step["name"])(model, **step["kwargs"])
    # setattr: nn.Module's __setattr__ is typed for tensors and modules only
    setattr(model, "_sepconv_spec", {"name": spec["name"], "kwargs": dict(spec["kwargs"])})  # noqa: B010
    setattr(model, "_sepconv_transforms", [dict(step) for step in transforms])  # noqa: B010
    return model


def expected_tensors(
    spec: Mapping[str, Any], transforms: list[dict[str, Any]], *, registry: Transforms = NO_TRANSFORMS
) -> dict[str, TensorSpec]:
    """Name -> (shape, dtype) of the ``state_dict`` the recipe's model has, without allocating it.

    Builds the model under ``torch.device("meta")``. A builder that reads tensor values while it
    builds (torchvision's RegNets compute their widths with tensors) cannot run there; it is retried
    with only its large tensors on ``meta``. The builders' own errors (TypeError, ValueError, ...)
    propagate, for the caller to report against the file.
    """
    state = _meta_build(spec, transforms, registry).state_dict()
    return {name: (tuple(tensor.shape), tensor.dtype) for name, tensor in state.items()}


def expected_ties(
    spec: Mapping[str, Any], transforms: list[dict[str, Any]], *, registry: Transforms = NO_TRANSFORMS
) -> list[tuple[str, ...]]:
    """The :func:`tied_names` of the recipe's model, built without allocating it (as expected_tensors)."""
    return tied_names(_meta_build(spec, transforms, registry).state_dict())


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


def _meta_build(spec: Mapping[str, Any], transforms: list[dict[str, Any]], registry: Transforms) -> nn.Module:
    try:
        with torch.device("meta"), _construction_budget(spec):
            return rebuild(spec, transforms, registry=registry)
    except NotImplementedError:  # "Cannot copy out of meta tensor": the builder needed real values
        with _MetaUnlessSmall(), _construction_budget(spec):
            return rebuild(spec, transforms, registry=registry)


@contextlib.contextmanager
def _construction_budget(spec: Mapping[str, Any]) -> Iterator[None]:
    """Stop the build at the first module beyond MAX_RECIPE_MODULES or parameter beyond MAX_RECIPE_PARAMETERS.

    The argument checks bound each number, not what a builder makes of them (blocks x repeats x
    widths), so the build itself is counted: every submodule and parameter a module registers passes
    through torch's global registration hooks, removed again on the way out. Only this thread's
    build is counted: another thread building its own modules meanwhile is none of its business.
    """
    from torch.nn.modules import module as module_hooks

    counts = {"modules": 0, "parameters": 0}
    described = describe_spec(spec)
    builder = threading.get_ident()

    def count_module(parent: nn.Module, name: str, submodule: nn.Module | None) -> None:
        if threading.get_ident() != builder:
            return
        counts["modules"] += 1
        if counts["modules"] > MAX_RECIPE_MODULES:
            raise RecipeLimitError(
                f"its recipe ({described}) builds more than {MAX_RECIPE_MODULES:,} modules, the most a model "
                f"file may describe (MAX_RECIPE_MODULES); torchvision's largest model has 1,409"
            )

    def count_parameter(parent: nn.Module, name: str, parameter: torch.Tensor | None) -> None:
        if threading.get_ident() != builder:
            return
        counts["parameters"] += 0 if parameter is None else parameter.numel()
        if counts["parameters"] > MAX_RECIPE_PARAMETERS:
            raise RecipeLimitError(
                f"its recipe ({described}) builds more than {MAX_RECIPE_PARAMETERS:,} parameters, the most a "
                f"model file may describe (MAX_RECIPE_PARAMETERS)"
            )

    handles = [
        module_hooks.register_module_module_registration_hook(count_module),
        module_hooks.register_module_parameter_registration_hook(count_parameter),
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def describe_spec(spec: Mapping[str, Any]) -> str:
    """``name(key=value, ...)`` of a recipe's spec, cut at 200 characters, for messages."""
    arguments = ", ".join(f"{key}={value!r}" for key, value in spec["kwargs"].items())
    return f"{spec['name']}({arguments})"[:200]


class _MetaUnlessSmall(TorchFunctionMode):
    """Like ``torch.device("meta")``, but tensors of at most ``_SMALL_NUMEL`` elements get real storage.

    Small tensors are what a builder computes with (a few widths); parameters of any size that
    matters stay on ``meta``, so the memory used stays bounded whatever the recipe asks for.
    """

    def __torch_function__(
        self, func: Any, types: Any, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        from torch.utils._device import _device_constructors  # the list torch.device("meta") uses

        kwargs = kwargs or {}
        if func in _device_constructors() and kwargs.get("device") is None:
            meta = func(*args, **{**kwargs, "device": "meta"})
            if meta.numel() > _SMALL_NUMEL:
                return meta
        return func(*args, **kwargs)
