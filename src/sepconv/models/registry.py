"""The model registry: build any sepconv or torchvision model by name.

``create_model("mobilenet_v2", width_mult=0.5)`` and ``create_model("torchvision:resnet18")`` both
return a freshly initialised model (torchvision models never download weights here) and record the
recipe on it (:func:`model_spec`), so a checkpoint can store *how* to rebuild the architecture
instead of pickled code. Arguments are checked before anything is allocated (unknown names, and a
parameter count taken on the ``meta`` device against :data:`~sepconv.models.validation.MAX_PARAMETERS`);
:func:`default_input_size` gives the (channels, height, width) a model expects.
"""

from __future__ import annotations

import difflib
import inspect
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from sepconv.checks import check_image_size, check_int
from sepconv.errors import ArgumentTypeError
from sepconv.layers.conv import name_layers
from sepconv.models.validation import MAX_CHANNELS, MAX_CLASSES, MAX_PARAMETERS

__all__ = [
    "TORCHVISION_PREFIX",
    "create_model",
    "default_input_size",
    "list_models",
    "model_spec",
    "register_model",
]

#: The prefix that names a torchvision model: ``torchvision:resnet18``.
TORCHVISION_PREFIX = "torchvision:"
_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_INPUT_SIZES: dict[str, tuple[int, int, int]] = {}
_IMAGENET_SIZE = (3, 224, 224)


def register_model(
    name: str, *, input_size: tuple[int, int, int] = _IMAGENET_SIZE
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator that registers a model builder under ``name``; a duplicate name is an error.

    ``input_size`` is the (channels, height, width) the model is made for, what
    :func:`default_input_size` returns (with ``in_channels`` as built).
    """
    input_size = check_image_size("input_size", input_size)

    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"a model named {name!r} is already registered ({_REGISTRY[name].__module__})")
        _REGISTRY[name] = builder
        channels, height, width = input_size  # a copy: a list passed in stays the caller's
        _INPUT_SIZES[name] = (channels, height, width)
        return builder

    return decorate


def _torchvision_names() -> list[str]:
    import torchvision.models

    return sorted(torchvision.models.list_models())


def list_models(include_torchvision: bool = True) -> list[str]:
    """Names ``create_model`` accepts: sepconv's own, then ``torchvision:<name>`` for torchvision's."""
    names = sorted(_REGISTRY)
    if include_torchvision:
        names += [TORCHVISION_PREFIX + name for name in _torchvision_names()]
    return names


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the model registered as ``name`` with ``kwargs``; unknown names list close matches.

    Raises ValueError (naming the model and the argument) for an argument the builder does not take,
    a value out of range, or a model above ``MAX_PARAMETERS`` parameters, before allocating it; a
    ``name`` that is not a str raises :class:`~sepconv.errors.ArgumentTypeError` (a TypeError).
    numpy numbers in ``kwargs`` (``np.int64(10)``) are taken as the Python numbers they stand for,
    so the recipe recorded on the model stays plain JSON.
    """
    if not isinstance(name, str):
        raise ArgumentTypeError(
            f"name must be a model name (a str such as 'mobilenet_v2'), got {name!r}; "
            "list them with sepconv.models.list_models()"
        )
    kwargs = {key: _plain(value) for key, value in kwargs.items()}
    if name.startswith(TORCHVISION_PREFIX):
        build = _torchvision_builder(name, kwargs)
    elif name in _REGISTRY:
        _check_keywords(name, _REGISTRY[name], kwargs)
        build = lambda: _REGISTRY[name](**kwargs)  # noqa: E731
    else:
        raise ValueError(_unknown_name_message(name))
    if torch.empty(0).device.type != "meta":  # a build on meta allocates nothing: no need to count first
        _check_parameter_count(name, build)
    model = build()
    # setattr: nn.Module's __setattr__ is typed for tensors and modules only
    setattr(model, "_sepconv_spec", {"name": name, "kwargs": dict(kwargs)})  # noqa: B010
    return name_layers(model)


def _plain(value: Any) -> Any:
    """``value`` with numpy-style numbers (any ``numbers.Integral`` / ``Real``) as Python int / float."""
    if isinstance(value, bool):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if type(value) in (list, tuple):
        return type(value)(_plain(item) for item in value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def _torchvision_builder(name: str, kwargs: dict[str, Any]) -> Callable[[], nn.Module]:
    import torchvision.models

    short_name = name[len(TORCHVISION_PREFIX) :]
    if short_name not in _torchvision_names():
        raise ValueError(_unknown_name_message(name))
    for key in ("weights", "weights_backbone"):
        if kwargs.get(key) is not None:
            raise ValueError(f"{key}={kwargs[key]!r}: sepconv builds models without downloading weights")
    for key, value in kwargs.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{name}: {key} must be a finite number, got {value!r}")
    if "num_classes" in kwargs:
        check_int("num_classes", kwargs["num_classes"], minimum=1, maximum=MAX_CLASSES)
    builder_kwargs = {
        key: value for key, value in kwargs.items() if key not in ("weights", "weights_backbone")
    }
    # Segmentation and detection builders fetch ImageNet backbone weights unless told not to.
    if "weights_backbone" in inspect.signature(torchvision.models.get_model_builder(short_name)).parameters:
        builder_kwargs["weights_backbone"] = None

    def build() -> nn.Module:
        try:
            model: nn.Module = torchvision.models.get_model(short_name, weights=None, **builder_kwargs)
            return model
        except TypeError as error:  # an argument the model does not take, or of the wrong type
            raise ValueError(f"{name}: {error}") from None

    return build


def _check_keywords(name: str, builder: Callable[..., nn.Module], kwargs: dict[str, Any]) -> None:
    parameters = inspect.signature(builder).parameters
    if any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters.values()):
        return
    for key in kwargs:
        if key not in parameters:
            accepted = ", ".join(parameters) or "none"
            raise ValueError(f"model {name!r} takes no argument {key!r}; it accepts: {accepted}")


def _check_parameter_count(name: str, build: Callable[[], nn.Module]) -> None:
    """Refuse a model above MAX_PARAMETERS, counted on the meta device (no memory, no initialisation)."""
    try:
        with torch.device("meta"):
            count = sum(parameter.numel() for parameter in build().parameters())
    except NotImplementedError:
        return  # the builder reads tensor values while building (torchvision's RegNets): no count
    except RuntimeError as error:  # sizes too large to describe even without memory (overflow)
        detail = " ".join(str(error).split())
        raise ValueError(f"model {name!r} cannot be built with these arguments: {detail}") from None
    if count > MAX_PARAMETERS:
        raise ValueError(
            f"model {name!r} with these arguments would have {count:,} parameters, more than the "
            f"{MAX_PARAMETERS:,} sepconv builds (sepconv.models.validation.MAX_PARAMETERS)"
        )


def default_input_size(name_or_model: str | nn.Module, **kwargs: Any) -> tuple[int, int, int]:
    """The (channels, height, width) of one input image for a model, by name or built by create_model.

    sepconv models: the size registered with the builder, with the channels of ``in_channels``
    (from ``kwargs``, else the model's recipe). torchvision models: the crop size of their default
    weights' preprocessing (224 for most, 299 for inception_v3), a ViT's ``image_size``, 3 channels.

    >>> default_input_size("standard_cnn"), default_input_size("mobilenet_v2", in_channels=1)
    ((1, 28, 28), (1, 224, 224))
    >>> default_input_size("torchvision:inception_v3")
    (3, 299, 299)
    """
    if isinstance(name_or_model, nn.Module):
        spec = model_spec(name_or_model)
        if spec is None:
            raise ValueError(
                f"{type(name_or_model).__name__} was not built by sepconv.models.create_model, so its "
                "input size is not known; give the input size explicitly"
            )
        name, kwargs = spec["name"], {**spec["kwargs"], **kwargs}
    elif isinstance(name_or_model, str):
        name = name_or_model
    else:
        raise ArgumentTypeError(
            f"name_or_model must be a model name (str) or a model built by create_model, got {name_or_model!r:.80}"
        )
    if name in _REGISTRY:
        channels, height, width = _INPUT_SIZES[name]
        in_channels = kwargs.get("in_channels", channels)
        return check_int("in_channels", in_channels, minimum=1, maximum=MAX_CHANNELS), height, width
    if name.startswith(TORCHVISION_PREFIX) and name[len(TORCHVISION_PREFIX) :] in _torchvision_names():
        height, width = _torchvision_image_size(name[len(TORCHVISION_PREFIX) :], kwargs)
        return 3, height, width
    raise ValueError(_unknown_name_message(name))


def _torchvision_image_size(short_name: str, kwargs: dict[str, Any]) -> tuple[int, int]:
    import torchvision.models

    if "image_size" in kwargs:  # ViTs built for another resolution
        size = check_int("image_size", kwargs["image_size"], minimum=1, maximum=16_384)
        return size, size
    if short_name.startswith("vit_"):
        return 224, 224  # built without weights, every torchvision ViT takes image_size=224
    try:
        preprocessing = torchvision.models.get_model_weights(short_name).DEFAULT.transforms
    except (ValueError, AttributeError):  # a builder without weights
        return _IMAGENET_SIZE[1:]
    keywords = getattr(preprocessing, "keywords", {})
    size = keywords.get("crop_size", keywords.get("resize_size", _IMAGENET_SIZE[1]))
    sizes = list(size) if isinstance(size, Sequence) else [size, size]
    return int(sizes[0]), int(sizes[-1])


def model_spec(model: nn.Module) -> dict[str, Any] | None:
    """The ``{"name", "kwargs"}`` recipe that built ``model`` through ``create_model``, if any."""
    return getattr(model, "_sepconv_spec", None)


def _unknown_name_message(name: str) -> str:
    candidates = list_models()
    close = difflib.get_close_matches(name, candidates, n=5, cutoff=0.5)
    close += [c for c in candidates if name.lower() in c.lower() and c not in close][: 5 - len(close)]
    hint = (
        f"; did you mean {', '.join(close)}?" if close else f"; known names: {', '.join(sorted(_REGISTRY))}"
    )
    return f"unknown model name {name!r}{hint} (list them with sepconv.models.list_models())"
