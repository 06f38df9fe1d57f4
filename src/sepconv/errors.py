"""The errors sepconv raises for its users: what the ``sepconv`` command reports as one line.

:class:`SepconvError` is an error the user can act on (bad input, a bad file, a diverged run); the
command prints its message as one line and exits with code 2. Library functions also raise plain
``ValueError`` (a bad argument, named with its value) and ``OSError`` (a file that cannot be read or
written); the command treats those the same way. Every other exception is a bug and keeps its traceback.

This module imports nothing, so the command line and torch-free modules can use it.
"""

from __future__ import annotations

__all__ = ["SepconvError", "UsageError"]


class SepconvError(Exception):
    """An error the user can act on (bad input, a bad file, a diverged run).

    The ``sepconv`` command prints its message as one line and exits with code 2.
    """


class UsageError(SepconvError):
    """A command-line argument that the command cannot use (a bad value, a missing file)."""
