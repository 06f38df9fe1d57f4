"""The bounds of the model builders' arguments: numbers finite and in range, sizes bounded.

A model's arguments can come from a command line or from a file that nobody checked, so every builder
refuses, with a :class:`~sepconv.errors.ParameterError` naming the argument and its value (the checks
of :mod:`sepconv.checks`), what would crash later with a PyTorch message or quietly allocate gigabytes.
The bounds are far above any sensible model:

- :data:`MAX_CHANNELS` for any channel count (``in_channels``, ``widths``, ``round_nearest``),
- :data:`MAX_CLASSES` for ``num_classes``, :data:`MAX_WIDTH_MULT` for ``width_mult``,
- :data:`MAX_PARAMETERS` for the whole model (``create_model`` counts them on the ``meta`` device,
  which allocates nothing, before it builds the model).

>>> check_channel_list("widths", [8, 8, 0], 3)
Traceback (most recent call last):
sepconv.errors.ParameterError: widths must be 3 integers in [1, 65,536] (channel counts), got 0 in [8, 8, 0]
"""

from __future__ import annotations

from typing import Any

from sepconv.checks import check_int_sequence

__all__ = [
    "MAX_CHANNELS",
    "MAX_CLASSES",
    "MAX_PARAMETERS",
    "MAX_WIDTH_MULT",
    "check_channel_list",
]

#: The most channels a model argument may ask for.
MAX_CHANNELS = 65_536
#: The most classes a model may have.
MAX_CLASSES = 1_000_000
#: The largest width multiplier accepted.
MAX_WIDTH_MULT = 64.0
#: The most parameters a model may have (2 GB of float32 weights).
MAX_PARAMETERS = 500_000_000  # 2 GB of float32 weights


def check_channel_list(name: str, value: Any, length: int) -> tuple[int, ...]:
    """``value`` as a tuple of ints if it holds ``length`` channel counts, each in [1, MAX_CHANNELS]."""
    return check_int_sequence(name, value, lengths=length, maximum=MAX_CHANNELS, meaning="channel counts")
