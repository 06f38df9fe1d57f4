"""The errors sepconv raises for its users: what the ``sepconv`` command reports as one line.

:class:`SepconvError` is an error the user can act on (bad input, a bad file, a diverged run); the
command prints its message as one line and exits with code 2. Library functions also raise plain
``ValueError`` (a bad argument, named with its value), :class:`ArgumentTypeError` (an argument of the
wrong type, a ``TypeError`` that is also a ``ValueError``) and ``OSError`` (a file that cannot be read or
written); the command treats those the same way. Every other exception is a bug and keeps its traceback.

This module imports nothing heavy, so the command line and torch-free modules can use it.
:class:`ArgumentTypeError` lives in :mod:`sepconv.arithmetic`, which must import nothing from the
package (it is checked to load on its own, without torch); it is re-exported here.
"""

from __future__ import annotations

from sepconv.arithmetic import ArgumentTypeError

__all__ = ["ArgumentTypeError", "SepconvError", "UsageError"]


class SepconvError(Exception):
    """An error the user can act on (bad input, a bad file, a diverged run).

    The ``sepconv`` command prints its message as one line and exits with code 2.
    """


class UsageError(SepconvError):
    """A command-line argument that the command cannot use (a bad value, a missing file)."""
