"""What an exported .onnx file says about itself: sepconv's metadata, written by export, checked on reading.

:func:`onnx_metadata` builds the JSON document :func:`~sepconv.deploy.onnx_export.export_onnx` stores
under :data:`METADATA_KEY` (recipe, input size, normalization, class names); :func:`parse_metadata`
and :func:`check_metadata` read it back within bounds, for :class:`~sepconv.deploy.runtime.OnnxModel`
and quantization, since a file's metadata is untrusted input. Export and the readers share this
module, so neither imports the other for it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from sepconv.errors import SepconvError
from sepconv.io.bounded_json import load_bounded_json

__all__ = [
    "INPUT_NAME",
    "MAX_METADATA_CHARS",
    "METADATA_KEY",
    "OUTPUT_NAME",
    "ExportError",
    "check_metadata",
    "onnx_metadata",
    "parse_metadata",
]

#: The name of the exported model's input.
INPUT_NAME = "images"
#: The name of the exported model's output.
OUTPUT_NAME = "logits"
#: The ONNX metadata key under which sepconv stores what it knows of the model.
METADATA_KEY = "sepconv"
METADATA_FORMAT = "sepconv-onnx"
METADATA_VERSION = 1
# Bounds on the metadata an .onnx file may carry (it is untrusted input to OnnxModel and evaluate).
# The largest real document is a recipe (a few KB) and the class names of a 21,843-class ImageNet
# model (~0.5 MB); the recipe inside nests up to 8 levels (sepconv.io.recipe.MAX_RECIPE_DEPTH) below
# spec/kwargs.
#: The longest metadata a file may carry; a longer one is refused as corrupt or hostile.
MAX_METADATA_CHARS = 4 * 1024 * 1024
MAX_METADATA_DEPTH = 12
MAX_CLASS_NAME_CHARS = 1024
MAX_INPUT_SIDE = 65_536


class ExportError(SepconvError, ValueError):
    """A model that ONNX cannot export, or an exported file that does not reproduce the model."""


def onnx_metadata(
    model: nn.Module,
    input_size: Sequence[int],
    folded_batchnorms: Sequence[str] = (),
    extra: Mapping[str, Any] | None = None,
    *,
    num_classes: int | None = None,
) -> dict[str, Any]:
    """The self-description stored in an exported file (JSON under the ``sepconv`` metadata key).

    ``extra``'s normalization and class names are checked as :class:`OnnxModel` checks them on
    loading (:func:`check_metadata`, against ``num_classes``, the model's outputs, when given), so a
    file that would be refused later is not written.
    """
    from sepconv import __version__
    from sepconv.io.transforms import model_transforms
    from sepconv.models import model_spec

    extra = dict(extra or {})
    unknown = set(extra) - {"mean", "std", "class_names", "dataset", "precision", "quantization"}
    if unknown:
        raise ValueError(
            f"metadata keys must be among mean, std, class_names, dataset, precision, quantization, got "
            f"{sorted(unknown)}"
        )
    for key in ("mean", "std", "class_names"):
        if extra.get(key) is not None:
            if isinstance(extra[key], str | bytes) or not isinstance(extra[key], Sequence | np.ndarray):
                raise ValueError(f"metadata[{key!r}] must be a list, got {extra[key]!r:.100}")
            extra[key] = [str(item) if key == "class_names" else _plain_number(item) for item in extra[key]]
    sizes = [int(value) for value in input_size]
    check_metadata(
        {key: extra.get(key) for key in ("mean", "std", "class_names")} | {"input_size": sizes},
        subject="metadata['{key}']",
        num_classes=num_classes,
    )
    return {
        "format": METADATA_FORMAT,
        "version": METADATA_VERSION,
        "sepconv_version": __version__,
        "spec": model_spec(model),
        "transforms": model_transforms(model),
        "input_size": [int(value) for value in input_size],
        "input_name": INPUT_NAME,
        "output_name": OUTPUT_NAME,
        "folded_batchnorms": len(folded_batchnorms),
        "precision": extra.pop("precision", "float32"),
        "mean": extra.pop("mean", None),
        "std": extra.pop("std", None),
        "class_names": extra.pop("class_names", None),
        **extra,
    }


def _plain_number(value: Any) -> Any:
    # Numbers (numpy's and torch's too) become floats; anything else is left for check_metadata to name.
    if isinstance(value, bool) or not isinstance(value, int | float | np.number | torch.Tensor):
        return value
    return float(value)


def parse_metadata(text: str, *, where: str) -> dict[str, Any]:
    """sepconv's metadata JSON from an .onnx file, parsed within :data:`MAX_METADATA_CHARS` and a depth bound.

    ``where`` names the file. Raises :class:`ExportError` for a document too long, too deep, not JSON
    or not an object.
    """
    try:
        document = load_bounded_json(
            text,
            what=f"{where}: its sepconv metadata",
            max_chars=MAX_METADATA_CHARS,
            max_depth=MAX_METADATA_DEPTH,
        )
    except ValueError as error:
        raise ExportError(str(error)) from None
    if not isinstance(document, dict):
        raise ExportError(
            f"{where}: its sepconv metadata must be a JSON object, got {type(document).__name__}"
        )
    return document


def check_metadata(
    document: Mapping[str, Any],
    *,
    subject: str,
    num_classes: int | None = None,
    graph_input: Sequence[Any] | None = None,
) -> None:
    """Check the stored ``input_size``, ``mean``, ``std`` and ``class_names``; a ValueError for the first wrong.

    ``input_size``: three integers in [1, 65536], equal to the graph's input sizes where the graph
    fixes them (``graph_input``: ``(C, H, W)``, ``None`` or a name for a dynamic size). ``mean``: one
    finite number per input channel; ``std``: one finite number > 0 per channel; ``class_names``: one
    string (at most 1,024 characters) per model output (``num_classes``, when known). Each may be
    absent or null. ``subject`` names the entry, ``{key}`` standing for its key: ``"metadata['{key}']"``.
    """

    def name(key: str) -> str:
        return subject.replace("{key}", key)  # not str.format: a file's path may hold braces

    size = document.get("input_size")
    if size is not None:
        if (
            not isinstance(size, list)
            or len(size) != 3
            or any(
                isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_INPUT_SIDE for v in size
            )
        ):
            raise ValueError(
                f"{name('input_size')} is {size!r:.100}; it must be [channels, height, width], three integers "
                f"in [1, {MAX_INPUT_SIDE:,}]"
            )
        if graph_input is not None:
            fixed = [(stored, dim) for stored, dim in zip(size, graph_input) if isinstance(dim, int)]
            if any(stored != dim for stored, dim in fixed):
                raise ValueError(
                    f"{name('input_size')} is {size!r}, but the model's graph takes images of "
                    f"{list(graph_input)!r} (channels, height, width)"
                )
    sizes = size if size is not None else list(graph_input or [])
    channels = sizes[0] if sizes and isinstance(sizes[0], int) else None
    for key in ("mean", "std"):
        values = document.get(key)
        if values is None:
            continue
        wanted = (
            f"{channels} finite number{'s' if channels != 1 else ''}, one per input channel"
            if channels
            else "finite numbers"
        )
        if key == "std":
            wanted += ", each > 0"
        valid = (
            isinstance(values, list)
            and (channels is None or len(values) == channels)
            and 0 < len(values) <= MAX_INPUT_SIDE
            and all(
                not isinstance(v, bool)
                and isinstance(v, int | float)
                and math.isfinite(v)
                and (key == "mean" or v > 0)
                for v in values
            )
        )
        if not valid:
            raise ValueError(f"{name(key)} is {values!r:.100}; it must be {wanted}")
    names = document.get("class_names")
    if names is not None:
        wanted = f"{num_classes} strings, one per model output" if num_classes else "strings"
        if not isinstance(names, list) or (num_classes is not None and len(names) != num_classes):
            count = f"{len(names):,} names" if isinstance(names, list) else f"{names!r:.100}"
            raise ValueError(f"{name('class_names')} holds {count}; it must be {wanted}")
        for index, item in enumerate(names):
            if not isinstance(item, str) or len(item) > MAX_CLASS_NAME_CHARS:
                raise ValueError(
                    f"{name('class_names')}[{index}] is {item!r:.100}; class names must be strings of at most "
                    f"{MAX_CLASS_NAME_CHARS:,} characters"
                )
