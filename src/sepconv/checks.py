"""The one family of argument checks: integers, finite floats, choices, sizes; one wording for each bound.

Every public function of sepconv checks its arguments up front, so that a bad value is refused in one
line naming the parameter and the value rather than by a PyTorch message three calls later. The checks
live here, once, and so does their wording; each returns the value normalised (a numpy integer becomes
an ``int``, a list of sizes a tuple) and raises, with ``.param`` set to ``name``:

- :class:`~sepconv.errors.ArgumentTypeError` (a TypeError) for a value of the wrong type,
- :class:`~sepconv.errors.ParameterError` (a ValueError) for a value of the right type out of bounds.

Both say the same sentence, ``<name> must be <what is valid>, got <value>``, with one phrase for each
kind of bound (:func:`describe_integer`, :func:`describe_float`):

===================  ===========================  ================================
bounds               an integer                   a float
===================  ===========================  ================================
``minimum=1``        a positive integer           a finite number >= 1
``minimum=0``        a non-negative integer       a finite number >= 0
``minimum=m``        an integer >= m              a finite number >= m (> m open)
``maximum=M``        an integer <= M              a finite number <= M (< M open)
both                 an integer in [m, M]         a finite number in [m, M) ...
===================  ===========================  ================================

Integers print with thousands separators (``65,536``), floats in ``%g``. The command line maps ``name``
to its flag (``input_size`` to ``--input-size``), so no message here names a flag.

This module imports nothing but :mod:`sepconv.errors`: no torch, no numpy (numpy's integers and floats
are accepted through :mod:`numbers`).

>>> check_int("num_classes", 0, minimum=1, maximum=1_000_000)
Traceback (most recent call last):
sepconv.errors.ParameterError: num_classes must be an integer in [1, 1,000,000], got 0
>>> check_float("lr", 3e-4, minimum=0, min_inclusive=False)
0.0003
>>> check_input_size("input_size", [1, 3, 96, 96])
(1, 3, 96, 96)
"""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Iterable, Sequence
from typing import Any

from sepconv.errors import ArgumentTypeError, ParameterError

__all__ = [
    "check_choice",
    "check_finite_json",
    "check_float",
    "check_image_size",
    "check_input_size",
    "check_int",
    "check_int_sequence",
    "check_non_negative",
    "check_positive",
    "choice_error",
    "describe_float",
    "describe_integer",
]


def describe_integer(minimum: int | None = None, maximum: int | None = None, *, plural: bool = False) -> str:
    """What an integer within the bounds is called in messages: "a positive integer", "an integer in [1, 8]".

    ``plural=True`` gives the phrase for several values ("positive integers", "integers in [1, 8]").

    >>> describe_integer(1), describe_integer(0), describe_integer(2), describe_integer(0, 9, plural=True)
    ('a positive integer', 'a non-negative integer', 'an integer >= 2', 'integers in [0, 9]')
    """
    _check_bounds_order(minimum, maximum)
    noun = "integers" if plural else "integer"
    if minimum == 1 and maximum is None:
        words = f"positive {noun}"
    elif minimum == 0 and maximum is None:
        words = f"non-negative {noun}"
    elif minimum is not None and maximum is not None:
        words = f"{noun} in [{minimum:,}, {maximum:,}]"
    elif minimum is not None:
        words = f"{noun} >= {minimum:,}"
    elif maximum is not None:
        words = f"{noun} <= {maximum:,}"
    else:
        words = noun
    if plural:
        return words
    return f"{'an' if words.startswith('integer') else 'a'} {words}"


def describe_float(
    minimum: float | None = None,
    maximum: float | None = None,
    *,
    min_inclusive: bool = True,
    max_inclusive: bool = True,
) -> str:
    """What a finite float within the bounds is called in messages: "a finite number in [0, 1)".

    >>> describe_float(0, min_inclusive=False), describe_float(0, 1, max_inclusive=False)
    ('a finite number > 0', 'a finite number in [0, 1)')
    """
    for bound_name, bound in (("minimum", minimum), ("maximum", maximum)):
        if bound is not None and not math.isfinite(bound):
            raise ValueError(f"{bound_name} must be a finite number or None, got {bound!r}")
    _check_bounds_order(minimum, maximum)
    if minimum is not None and maximum is not None:
        opening, closing = "[" if min_inclusive else "(", "]" if max_inclusive else ")"
        return f"a finite number in {opening}{minimum:g}, {maximum:g}{closing}"
    if minimum is not None:
        return f"a finite number {'>=' if min_inclusive else '>'} {minimum:g}"
    if maximum is not None:
        return f"a finite number {'<=' if max_inclusive else '<'} {maximum:g}"
    return "a finite number"


def _check_bounds_order(minimum: float | None, maximum: float | None) -> None:
    # A check written with its bounds swapped would refuse everything; say so where it is written.
    if minimum is not None and maximum is not None and minimum > maximum:
        raise ValueError(f"minimum must be <= maximum, got {minimum} > {maximum}")


def _is_integer(value: object) -> bool:
    """True for Python's and numpy's integers; False for bools (``True + True`` is no size)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _within(
    value: float, minimum: float | None, maximum: float | None, min_inclusive: bool, max_inclusive: bool
) -> bool:
    above = minimum is None or (value >= minimum if min_inclusive else value > minimum)
    below = maximum is None or (value <= maximum if max_inclusive else value < maximum)
    return above and below


def check_int(name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an int if it is an integer (numpy's too, never a bool) in ``[minimum, maximum]``.

    Either bound may be None (unbounded on that side).

    >>> check_int("seed", -1, minimum=0, maximum=2**32 - 1)
    Traceback (most recent call last):
    sepconv.errors.ParameterError: seed must be an integer in [0, 4,294,967,295], got -1
    """
    expected = describe_integer(minimum, maximum)
    if not _is_integer(value):
        raise ArgumentTypeError(f"{name} must be {expected}, got {value!r}", param=name)
    if not _within(value, minimum, maximum, True, True):
        raise ParameterError(f"{name} must be {expected}, got {value!r}", param=name)
    return int(value)


def check_positive(name: str, value: Any) -> int:
    """``value`` as an int if it is an integer >= 1 (a size, a count, a stride).

    >>> check_positive("groups", 0)
    Traceback (most recent call last):
    sepconv.errors.ParameterError: groups must be a positive integer, got 0
    """
    return check_int(name, value, minimum=1)


def check_non_negative(name: str, value: Any) -> int:
    """``value`` as an int if it is an integer >= 0 (a padding, a number of workers)."""
    return check_int(name, value, minimum=0)


def check_float(
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    min_inclusive: bool = True,
    max_inclusive: bool = True,
) -> float:
    """``value`` as a float if it is a finite real number (an int or numpy's too, never a bool) within bounds.

    ``min_inclusive=False`` makes the lower bound strict (``> minimum``), likewise ``max_inclusive``;
    ``nan`` and the infinities are refused whatever the bounds.

    >>> check_float("dropout", 1.0, minimum=0, maximum=1, max_inclusive=False)
    Traceback (most recent call last):
    sepconv.errors.ParameterError: dropout must be a finite number in [0, 1), got 1.0
    """
    expected = describe_float(minimum, maximum, min_inclusive=min_inclusive, max_inclusive=max_inclusive)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(f"{name} must be {expected}, got {value!r}", param=name)
    number = float(value)
    if not math.isfinite(number) or not _within(number, minimum, maximum, min_inclusive, max_inclusive):
        raise ParameterError(f"{name} must be {expected}, got {value!r}", param=name)
    return number


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """``value`` if it is one of ``choices``; else an error listing them, with close matches for a typo.

    >>> check_choice("optimizer", "adamw", ("adamw", "sgd"))
    'adamw'
    >>> check_choice("optimizer", "adam", ("adamw", "sgd"))
    Traceback (most recent call last):
    sepconv.errors.ParameterError: optimizer must be one of adamw, sgd; got 'adam' (did you mean 'adamw'?)
    """
    options = tuple(choices)
    if any(type(value) is type(option) and value == option for option in options):
        return value
    raise choice_error(name, value, options)


def choice_error(name: str, value: Any, choices: Iterable[Any]) -> ParameterError:
    """The error :func:`check_choice` raises for ``value``, for code that tests membership its own way.

    (A test the type checker understands, such as a ``TypeGuard``, then ``raise choice_error(...)``.)
    A str expected and something else given is an :class:`~sepconv.errors.ArgumentTypeError`.

    >>> str(choice_error("kind", "dilate", ("standard", "dilated")))
    "kind must be one of standard, dilated; got 'dilate' (did you mean 'dilated'?)"
    """
    options = tuple(choices)
    message = f"{name} must be one of {', '.join(str(option) for option in options)}; got {value!r}"
    names = [option for option in options if isinstance(option, str)]
    if isinstance(value, str) and names:
        close = difflib.get_close_matches(value, names, n=3, cutoff=0.6)
        if close:
            message += f" (did you mean {' or '.join(repr(option) for option in close)}?)"
    if names and len(names) == len(options) and not isinstance(value, str):
        return ArgumentTypeError(message, param=name)
    return ParameterError(message, param=name)


def _count_phrase(lengths: tuple[int, ...] | None) -> str:
    if lengths is None:
        return "one or more"
    words = [str(length) for length in lengths]
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def check_int_sequence(
    name: str,
    value: Any,
    *,
    lengths: int | Sequence[int] | None = None,
    minimum: int | None = 1,
    maximum: int | None = None,
    meaning: str | None = None,
) -> tuple[int, ...]:
    """``value`` as a tuple of ints if it holds ``lengths`` integers, each in ``[minimum, maximum]``.

    ``lengths`` is the number of items allowed (an int, several, or None for one or more); ``meaning``
    says what the items are, in the message ("channels, height, width"). A str, a non-sequence or an
    item that is not an integer raises ArgumentTypeError; another length or an item out of bounds
    ParameterError. A numpy array or a tensor of sizes is accepted (through its ``tolist()``).

    >>> check_int_sequence("widths", [8, 0, 8], lengths=3, maximum=65_536)
    Traceback (most recent call last):
    sepconv.errors.ParameterError: widths must be 3 integers in [1, 65,536], got 0 in [8, 0, 8]
    """
    allowed = (lengths,) if isinstance(lengths, int) else None if lengths is None else tuple(lengths)
    expected = f"{_count_phrase(allowed)} {describe_integer(minimum, maximum, plural=True)}"
    if meaning:
        expected += f" ({meaning})"
    items = value
    if hasattr(items, "tolist") and not isinstance(items, numbers.Number):
        items = items.tolist()  # a numpy array or a tensor of sizes
    if isinstance(items, str | bytes) or not isinstance(items, Sequence):
        raise ArgumentTypeError(f"{name} must be {expected}, got {value!r}", param=name)
    if (allowed is None and not items) or (allowed is not None and len(items) not in allowed):
        raise ParameterError(f"{name} must be {expected}, got {value!r}", param=name)
    for item in items:
        if not _is_integer(item):
            raise ArgumentTypeError(f"{name} must be {expected}, got {item!r} in {value!r}", param=name)
        if not _within(item, minimum, maximum, True, True):
            raise ParameterError(f"{name} must be {expected}, got {item!r} in {value!r}", param=name)
    return tuple(int(item) for item in items)


def check_image_size(name: str, value: Any) -> tuple[int, int, int]:
    """``value`` as ``(channels, height, width)``: three positive integers, the size of one image.

    >>> check_image_size("input_size", (28, 28))
    Traceback (most recent call last):
    sepconv.errors.ParameterError: input_size must be 3 positive integers (channels, height, width), got (28, 28)
    """
    channels, height, width = check_int_sequence(name, value, lengths=3, meaning="channels, height, width")
    return channels, height, width


def check_input_size(name: str, value: Any) -> tuple[int, ...]:
    """``value`` as the size of a model input: ``(C, H, W)`` or, with a leading batch size, ``(N, C, H, W)``.

    The one meaning of every ``--input-size``: three or four positive integers, returned as given
    (a caller that needs the batch adds ``(1,)`` to a 3-tuple).

    >>> check_input_size("input_size", (3, 96, 96)), check_input_size("input_size", (8, 3, 96, 96))
    ((3, 96, 96), (8, 3, 96, 96))
    >>> check_input_size("input_size", (96, 96))
    Traceback (most recent call last):
    sepconv.errors.ParameterError: input_size must be 3 or 4 positive integers ([batch,] channels, height, width), got (96, 96)
    """
    return check_int_sequence(name, value, lengths=(3, 4), meaning="[batch,] channels, height, width")


def check_finite_json(name: str, value: Any) -> Any:
    """``value`` unchanged if no float in it (nested in dicts, lists, tuples) is NaN or infinite.

    Values stored as JSON (a model's arguments in a checkpoint) must stay JSON: ``nan`` is not. The
    message names where the bad number sits (``model_kwargs['dropout']``), ``.param`` is ``name``.

    >>> check_finite_json("model_kwargs", {"dropout": float("nan")})
    Traceback (most recent call last):
    sepconv.errors.ParameterError: model_kwargs['dropout'] must hold finite numbers, got nan
    """
    _check_finite_json_at(name, name, value)
    return value


def _check_finite_json_at(param: str, where: str, value: Any) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ParameterError(f"{where} must hold finite numbers, got {value!r}", param=param)
    if isinstance(value, dict):
        for key, item in value.items():
            _check_finite_json_at(param, f"{where}[{key!r}]", item)
    elif isinstance(value, list | tuple):
        for item in value:
            _check_finite_json_at(param, where, item)
