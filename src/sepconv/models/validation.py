"""Argument checks shared by the model builders: numbers finite and in range, sizes bounded.

A model's arguments can come from a command line or from a file that nobody checked, so every builder
refuses, with a ``ValueError`` naming the argument and its value, what would crash later with a
PyTorch message or quietly allocate gigabytes. The bounds are far above any sensible model:

- :data:`MAX_CHANNELS` for any channel count (``in_channels``, ``widths``, ``round_nearest``),
- :data:`MAX_CLASSES` for ``num_classes``, :data:`MAX_WIDTH_MULT` for ``width_mult``,
- :data:`MAX_PARAMETERS` for the whole model (``create_model`` counts them on the ``meta`` device,
  which allocates nothing, before it builds the model).

>>> check_int("num_classes", 10, maximum=MAX_CLASSES)
10
>>> check_float("dropout", 1.0, minimum=0.0, maximum=1.0, max_inclusive=False)
Traceback (most recent call last):
ValueError: dropout must be a finite number in [0, 1), got 1.0
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any

from sepconv.arithmetic import ArgumentTypeError

__all__ = [
    "MAX_CHANNELS",
    "MAX_CLASSES",
    "MAX_PARAMETERS",
    "MAX_WIDTH_MULT",
    "check_channel_list",
    "check_float",
    "check_int",
]

MAX_CHANNELS = 65_536
MAX_CLASSES = 1_000_000
MAX_WIDTH_MULT = 64.0
MAX_PARAMETERS = 500_000_000  # 2 GB of float32 weights


def check_int(name: str, value: Any, *, minimum: int = 1, maximum: int) -> int:
    """``value`` as an int if it is an integer (numpy's too, not a bool) in ``[minimum, maximum]``.

    A wrong type raises :class:`~sepconv.errors.ArgumentTypeError` (a TypeError), a value out of range
    a ValueError; both name ``name``, the value and the range.
    """
    message = f"{name} must be an integer in [{minimum}, {maximum:,}], got {value!r}"
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ArgumentTypeError(message)
    if not minimum <= value <= maximum:
        raise ValueError(message)
    return int(value)


def check_float(
    name: str,
    value: Any,
    *,
    minimum: float,
    maximum: float,
    min_inclusive: bool = True,
    max_inclusive: bool = True,
) -> float:
    """``value`` as a float if it is a finite real number (numpy's too, not a bool) within the bounds.

    A wrong type raises :class:`~sepconv.errors.ArgumentTypeError` (a TypeError), a value out of range
    a ValueError; both name ``name``, the value and the interval.
    """
    interval = f"{'[' if min_inclusive else '('}{minimum:g}, {maximum:g}{']' if max_inclusive else ')'}"
    message = f"{name} must be a finite number in {interval}, got {value!r}"
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ArgumentTypeError(message)
    valid = (
        math.isfinite(value)
        and (value >= minimum if min_inclusive else value > minimum)
        and (value <= maximum if max_inclusive else value < maximum)
    )
    if not valid:
        raise ValueError(message)
    return float(value)


def check_channel_list(name: str, value: Any, length: int) -> tuple[int, ...]:
    """``value`` as a tuple of ints if it holds ``length`` channel counts in [1, MAX_CHANNELS].

    Not a sequence (or a str): :class:`~sepconv.errors.ArgumentTypeError`; another length or a count
    out of range: ValueError; an item that is not an integer: ArgumentTypeError.
    """
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise ArgumentTypeError(f"{name} must be a sequence of {length} channel counts, got {value!r}")
    if len(value) != length:
        raise ValueError(f"{name} must be a sequence of {length} channel counts, got {value!r}")
    for item in value:
        message = f"{name} must hold integers in [1, {MAX_CHANNELS:,}], got {item!r} in {list(value)!r}"
        if isinstance(item, bool) or not isinstance(item, Integral):
            raise ArgumentTypeError(message)
        if not 1 <= item <= MAX_CHANNELS:
            raise ValueError(message)
    return tuple(int(item) for item in value)
