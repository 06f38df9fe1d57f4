"""Helpers shared by the subcommands: argument types for numeric flags, sizes, models and JSON output.

Numeric flags use the argument types below (``type=positive_int``, ``type=finite_float(minimum=0)``),
so that argparse itself refuses a bad value with one line naming the flag and the value, exit code 2::

    sepconv evaluate: error: argument --batch-size: must be an integer >= 1, got '0' (see ...)

- :func:`positive_int` (>= 1: sizes, counts, epochs), :func:`non_negative_int` (>= 0: seeds, workers),
  :func:`integer` for other bounds;
- :func:`finite_float` for floats: refuses ``nan`` and ``inf`` always, and values outside the bounds
  given (``finite_float(minimum=0, min_inclusive=False)`` is "> 0", e.g. ``--lr``);
  :data:`positive_float` is exactly that.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from typing import Any

from sepconv.errors import UsageError

__all__ = [
    "UsageError",
    "finite_float",
    "html_file",
    "integer",
    "non_negative_int",
    "parse_int_list",
    "positive_float",
    "positive_int",
    "print_json",
    "resolve_model",
    "trained_on",
    "training_config",
]


def integer(*, minimum: int | None = None, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse ``type``: a decimal integer in ``[minimum, maximum]`` (either bound optional).

    >>> integer(minimum=1, maximum=8)("3")
    3
    >>> integer(minimum=1, maximum=8)("9")
    Traceback (most recent call last):
    argparse.ArgumentTypeError: must be an integer in [1, 8], got '9'
    """
    if minimum is not None and maximum is not None and minimum > maximum:
        raise ValueError(f"minimum must be <= maximum, got {minimum} > {maximum}")
    if minimum is not None and maximum is not None:
        expected = f"an integer in [{minimum}, {maximum}]"
    elif minimum is not None:
        expected = f"an integer >= {minimum}"
    elif maximum is not None:
        expected = f"an integer <= {maximum}"
    else:
        expected = "an integer"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {expected}, got {text!r}") from None
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"must be {expected}, got {text!r}")
        return value

    parse.__name__ = expected  # argparse and error messages show this name
    return parse


positive_int = integer(minimum=1)
positive_int.__doc__ = "An argparse ``type``: an integer >= 1 (a size, a count)."
non_negative_int = integer(minimum=0)
non_negative_int.__doc__ = "An argparse ``type``: an integer >= 0 (a seed, a number of workers)."


def finite_float(
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    min_inclusive: bool = True,
    max_inclusive: bool = True,
) -> Callable[[str], float]:
    """An argparse ``type``: a finite float (never ``nan`` or ``inf``) within the bounds given.

    ``min_inclusive=False`` makes the lower bound strict (``> minimum``), likewise ``max_inclusive``.

    >>> learning_rate = finite_float(minimum=0, min_inclusive=False)
    >>> learning_rate("3e-4"), learning_rate.__name__
    (0.0003, 'a finite number > 0')
    >>> learning_rate("nan")
    Traceback (most recent call last):
    argparse.ArgumentTypeError: must be a finite number > 0, got 'nan'
    >>> finite_float(minimum=0, maximum=1, max_inclusive=False)("1")
    Traceback (most recent call last):
    argparse.ArgumentTypeError: must be a finite number in [0, 1), got '1'
    """
    for name, bound in (("minimum", minimum), ("maximum", maximum)):
        if bound is not None and not math.isfinite(bound):
            raise ValueError(f"{name} must be a finite number or None, got {bound!r}")
    if minimum is not None and maximum is not None and minimum > maximum:
        raise ValueError(f"minimum must be <= maximum, got {minimum} > {maximum}")
    if minimum is not None and maximum is not None:
        expected = (
            f"a finite number in {'[' if min_inclusive else '('}{minimum:g}, "
            f"{maximum:g}{']' if max_inclusive else ')'}"
        )
    elif minimum is not None:
        expected = f"a finite number {'>=' if min_inclusive else '>'} {minimum:g}"
    elif maximum is not None:
        expected = f"a finite number {'<=' if max_inclusive else '<'} {maximum:g}"
    else:
        expected = "a finite number"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {expected}, got {text!r}") from None
        too_low = minimum is not None and (value < minimum if min_inclusive else value <= minimum)
        too_high = maximum is not None and (value > maximum if max_inclusive else value >= maximum)
        if not math.isfinite(value) or too_low or too_high:
            raise argparse.ArgumentTypeError(f"must be {expected}, got {text!r}")
        return value

    parse.__name__ = expected
    return parse


positive_float = finite_float(minimum=0, min_inclusive=False)
positive_float.__doc__ = "An argparse ``type``: a finite float > 0 (a learning rate, a scale)."


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
    """A MODEL argument: a model file written by sepconv (or a checkpoint's ``.state``), or a registered name.

    Names are those of ``sepconv.models.list_models()`` (``mobilenet_v2``, ``torchvision:resnet18``);
    ``kwargs`` (e.g. ``num_classes``) apply to names only.
    """
    from pathlib import Path

    from sepconv.models import create_model

    path = Path(spec)
    if path.suffix == ".state":  # a training checkpoint: its weights are the .safetensors beside it
        path = path.with_suffix(".safetensors")
        spec = str(path)
    if path.suffix == ".safetensors" or path.is_file():
        if not path.is_file():
            raise UsageError(f"checkpoint file not found: {spec}")
        from sepconv import load_model

        return load_model(path)
    return create_model(spec, **kwargs)


def training_config(spec: str) -> dict[str, Any] | None:
    """The ``config.json`` of the training run that wrote the model file ``spec``, if there is one.

    A model file sits in its run folder (``model.safetensors``) or in its ``checkpoints/`` subfolder;
    the config names the data set (``"dataset"``) and split seed (``"seed"``) the model was trained on.
    None for a registered name, a file outside a run folder, or an unreadable config.
    """
    from pathlib import Path

    path = Path(spec)
    if not path.is_file():
        return None
    for folder in (path.parent, path.parent.parent):
        config = folder / "config.json"
        if config.is_file():
            try:
                document = json.loads(config.read_text())
            except (OSError, json.JSONDecodeError):
                return None
            return document if isinstance(document, dict) else None
    return None


def trained_on(spec: str) -> tuple[str, int] | None:
    """(data set name, split seed) the model file ``spec`` was trained on, from its run's config.json; else None."""
    config = training_config(spec)
    if config is None or not config.get("dataset"):
        return None
    return str(config["dataset"]), int(config.get("seed") or 0)


def html_file(text: str) -> Any:
    """An argparse ``type`` for ``--html``: a path ending in .html whose folder exists (checked before any work)."""
    from pathlib import Path

    path = Path(text)
    if path.suffix.lower() not in (".html", ".htm"):
        raise argparse.ArgumentTypeError(f"must be a file ending in .html, got {text!r}")
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"folder {str(path.parent)!r} does not exist, got {text!r}")
    return path


html_file.__name__ = "an .html file in an existing folder"
