"""JSON from an untrusted file, parsed only within a size and a nesting-depth bound.

``json.loads`` has no limits of its own: a few kilobytes of ``[[[[...`` exhaust Python's recursion
limit (a ``RecursionError`` traceback, not an error about the file), and a multi-megabyte document is
parsed whatever it holds. :func:`load_bounded_json` measures both on the raw text first, so the
parser only ever sees a document of a size and shape the caller has accepted.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["load_bounded_json", "nesting_depth"]

# A JSON string (with its escapes); what is inside one is text, not structure.
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(r"[\[\]{}]")


def nesting_depth(text: str) -> int:
    """How deeply the arrays and objects of the JSON ``text`` nest (0 for a number or a string).

    Counts brackets outside strings, without parsing, so it is safe on any text.

    >>> nesting_depth('{"a": [1, [2, "]]]"]]}')
    3
    """
    depth = deepest = 0
    for bracket in _BRACKETS.findall(_STRING.sub('""', text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def load_bounded_json(text: str, *, what: str, max_chars: int, max_depth: int) -> Any:
    """``json.loads(text)``, or a ValueError naming ``what`` when ``text`` is too long, too deep or not JSON.

    ``what`` says where the text comes from ("/tmp/m.onnx: its sepconv metadata").

    >>> load_bounded_json('[[1]]', what="x", max_chars=100, max_depth=2)
    [[1]]
    >>> load_bounded_json('[[[1]]]', what="x", max_chars=100, max_depth=2)
    Traceback (most recent call last):
    ValueError: x nests 3 levels deep, more than the 2 it may
    """
    if not isinstance(text, str):
        raise TypeError(f"{what} must be JSON text (str), got {type(text).__name__}")
    if len(text) > max_chars:
        raise ValueError(f"{what} is {len(text):,} characters long, more than the {max_chars:,} it may be")
    depth = nesting_depth(text)
    if depth > max_depth:
        raise ValueError(f"{what} nests {depth} levels deep, more than the {max_depth} it may")
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as error:
        raise ValueError(f"{what} is not valid JSON ({error})") from None
