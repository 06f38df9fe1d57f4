"""sepconv: efficient convolutions for PyTorch: layers, MobileNet models, cost analysis, conversion, training.

``import sepconv`` loads only torch and the layer/model code; training, export and plotting libraries
are imported by the modules that need them.
"""

import os
from pathlib import Path

from torch import nn

from sepconv import analysis, arithmetic, layers, models
from sepconv.layers import DepthwiseConv2d, PointwiseConv2d, SeparableConv2d
from sepconv.models import create_model, list_models

__version__ = "0.1.0"


def save_model(model: nn.Module, path: str | os.PathLike[str], *, spec: dict | None = None) -> Path:
    """Save ``model`` (weights as safetensors + architecture as JSON); see :func:`sepconv.io.save_model`."""
    from sepconv.io import save_model as _save_model

    return _save_model(model, path, spec=spec)


def load_model(path: str | os.PathLike[str]) -> nn.Module:
    """Rebuild a model saved by :func:`save_model`, never unpickling code."""
    from sepconv.io import load_model as _load_model

    return _load_model(path)


__all__ = [
    "DepthwiseConv2d",
    "PointwiseConv2d",
    "SeparableConv2d",
    "__version__",
    "analysis",
    "arithmetic",
    "create_model",
    "layers",
    "list_models",
    "load_model",
    "models",
    "save_model",
]
