"""Helpers shared by the subcommands: argument parsing of sizes and JSON output."""

from __future__ import annotations

import json
import sys
from typing import Any

__all__ = ["UsageError", "parse_int_list", "print_json", "resolve_model"]


class UsageError(Exception):
    """An error caused by the user's input; ``sepconv`` reports it as one line, exit code 2."""


def parse_int_list(name: str, text: str) -> tuple[int, ...]:
    """Parse '224' or '1,3,224,224' (also 'x'-separated) into positive ints, naming ``name`` on error."""
    parts = [part for part in text.replace("x", ",").split(",") if part.strip()]
    try:
        values = tuple(int(part) for part in parts)
    except ValueError:
        raise UsageError(f"{name} must be positive integers separated by commas, got {text!r}") from None
    if not values or any(value < 1 for value in values):
        raise UsageError(f"{name} must be positive integers separated by commas, got {text!r}")
    return values


def print_json(document: Any) -> None:
    """Print one JSON document on stdout (and nothing else there)."""
    json.dump(document, sys.stdout, indent=2)
    sys.stdout.write("\n")


def resolve_model(spec: str, **kwargs: Any) -> Any:
    """A MODEL argument: a checkpoint file written by sepconv, or a registered model name.

    Names are those of ``sepconv.models.list_models()`` (``mobilenet_v2``, ``torchvision:resnet18``);
    ``kwargs`` (e.g. ``num_classes``) apply to names only.
    """
    from pathlib import Path

    from sepconv.models import create_model

    path = Path(spec)
    if path.suffix == ".safetensors" or path.is_file():
        if not path.is_file():
            raise UsageError(f"checkpoint file not found: {spec}")
        from sepconv.serialization import load_model

        return load_model(path)
    return create_model(spec, **kwargs)
