"""The model registry: build any sepconv or torchvision model by name.

``create_model("mobilenet_v2", width_mult=0.5)`` and ``create_model("torchvision:resnet18")`` both
return a freshly initialised model (torchvision models never download weights here) and record the
recipe on it (:func:`model_spec`), so a checkpoint can store *how* to rebuild the architecture
instead of pickled code.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from sepconv.layers.conv import name_layers

__all__ = ["TORCHVISION_PREFIX", "create_model", "list_models", "model_spec", "register_model"]

TORCHVISION_PREFIX = "torchvision:"
_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator that registers a model builder under ``name``; a duplicate name is an error."""

    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"a model named {name!r} is already registered ({_REGISTRY[name].__module__})")
        _REGISTRY[name] = builder
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
    """Build the model registered as ``name`` with ``kwargs``; unknown names list close matches."""
    if name.startswith(TORCHVISION_PREFIX):
        import torchvision.models

        short_name = name[len(TORCHVISION_PREFIX) :]
        if short_name not in _torchvision_names():
            raise ValueError(_unknown_name_message(name))
        for key in ("weights", "weights_backbone"):
            if kwargs.get(key) is not None:
                raise ValueError(f"{key}={kwargs[key]!r}: sepconv builds models without downloading weights")
        builder_kwargs = {
            key: value for key, value in kwargs.items() if key not in ("weights", "weights_backbone")
        }
        # Segmentation and detection builders fetch ImageNet backbone weights unless told not to.
        if (
            "weights_backbone"
            in inspect.signature(torchvision.models.get_model_builder(short_name)).parameters
        ):
            builder_kwargs["weights_backbone"] = None
        model = torchvision.models.get_model(short_name, weights=None, **builder_kwargs)
    elif name in _REGISTRY:
        model = _REGISTRY[name](**kwargs)
    else:
        raise ValueError(_unknown_name_message(name))
    model._sepconv_spec = {"name": name, "kwargs": dict(kwargs)}
    return name_layers(model)


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
