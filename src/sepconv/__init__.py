"""sepconv: efficient convolutions for PyTorch: layers, MobileNet models, cost analysis, conversion, training.

``import sepconv`` is cheap: it imports neither torch nor any other heavy library. The names below are
re-exported lazily (PEP 562): ``sepconv.SeparableConv2d`` or ``sepconv.models`` imports torch and the
layer/model code on first use, so ``sepconv --help`` and ``sepconv calc`` answer without loading torch.
Training, export and plotting libraries are imported by the modules that need them.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from sepconv._lazy import lazy_exports

if TYPE_CHECKING:  # what static type checkers see; at run time these come from __getattr__
    from pathlib import Path

    from torch import nn

    from sepconv import analysis, arithmetic, layers, models
    from sepconv.layers import DepthwiseConv2d, LowRankLinear, PointwiseConv2d, SeparableConv2d
    from sepconv.models import create_model, list_models

#: The installed sepconv's version (``MAJOR.MINOR.PATCH``; what changed is in the changelog).
__version__ = "0.2.0"

# Each re-exported name and the module that defines it (None: a subpackage of sepconv).
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "DepthwiseConv2d": "sepconv.layers",
        "LowRankLinear": "sepconv.layers",
        "PointwiseConv2d": "sepconv.layers",
        "SeparableConv2d": "sepconv.layers",
        "analysis": None,
        "arithmetic": None,
        "create_model": "sepconv.models",
        "layers": None,
        "list_models": "sepconv.models",
        "models": None,
    },
)


def save_model(model: nn.Module, path: str | os.PathLike[str], *, spec: dict | None = None) -> Path:
    """Save ``model`` (weights as safetensors + architecture as JSON); see :func:`sepconv.io.save_model`.

    The conversions recorded on ``model`` (``to_separable``, ``fold_batchnorm``) are stored as steps
    that :func:`load_model` replays.
    """
    from sepconv.convert.replay import save_model as _save_model

    return _save_model(model, path, spec=spec)


def load_model(path: str | os.PathLike[str]) -> nn.Module:
    """Rebuild a model saved by :func:`save_model`, never unpickling code; its conversions are replayed."""
    from sepconv.convert.replay import load_model as _load_model

    return _load_model(path)


__all__ = [
    "DepthwiseConv2d",
    "LowRankLinear",
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
