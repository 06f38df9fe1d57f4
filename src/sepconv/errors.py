"""The errors sepconv raises for its users: what the ``sepconv`` command reports as one line.

:class:`SepconvError` is an error the user can act on (bad input, a bad file, a diverged run); the
command prints its message as one line and exits with code 2. An error about one argument says which:
its ``param`` is the library's name of that argument (``"input_size"``, ``"lr"``), so that the command
can name its own flag for it (``--input-size``) while the library's message names only the parameter.
A message that names parameters as words of their own lists them in ``mentions`` (``"set devices to
at most 4; use a smaller batch_size"``), so that the command can put each one's flag in its place.

- :class:`ParameterError`: a bad argument value (also a ``ValueError``);
- :class:`ArgumentTypeError`: an argument of the wrong type (a ``TypeError``, and a ParameterError);
- :class:`UsageError`: a command-line argument the command cannot use (a missing file).

Library functions also raise plain ``ValueError`` and ``OSError`` (a file that cannot be read or
written); the command treats those the same way. Every other exception is a bug and keeps its traceback.

This module imports nothing, not even from the package: every other module, the torch-free bottom floor
(:mod:`sepconv.arithmetic`, :mod:`sepconv.checks`) included, can raise these.

>>> error = ParameterError("lr must be a finite number > 0, got 0.0", param="lr")
>>> error.param, isinstance(error, ValueError)
('lr', True)
"""

from __future__ import annotations

from typing import Any

__all__ = ["ArgumentTypeError", "ParameterError", "SepconvError", "UsageError"]


class SepconvError(Exception):
    """An error the user can act on (bad input, a bad file, a diverged run).

    The ``sepconv`` command prints its message as one line and exits with code 2. ``param``, when
    given, is the library name of the argument the error is about; the command maps it to its flag.
    ``mentions`` are the parameters (``param`` among them or not) that the message names as words
    wherever they appear, a message about two parameters say; the command puts each one's flag there.
    """

    def __init__(self, *args: object, param: str | None = None, mentions: tuple[str, ...] = ()) -> None:
        super().__init__(*args)
        self.param = param
        self.mentions = tuple(mentions)

    def __reduce__(self) -> tuple[Any, ...]:
        # Exceptions pickle their args only; keep ``param`` and ``mentions`` across processes (DDP, spawn).
        return (_rebuild, (type(self), self.args, self.param, self.mentions), self.__dict__)


def _rebuild(
    kind: type[SepconvError], args: tuple[object, ...], param: str | None, mentions: tuple[str, ...] = ()
) -> SepconvError:
    return kind(*args, param=param, mentions=mentions)


class UsageError(SepconvError):
    """A command-line argument that the command cannot use (a bad value, a missing file)."""


class ParameterError(SepconvError, ValueError):
    """A bad argument value, named with the value and what would be valid (``.param`` is its name).

    A ``ValueError`` too, so code that catches the library's argument errors as ValueError keeps working.
    """


class ArgumentTypeError(ParameterError, TypeError):
    """An argument of the wrong type (a str where an int belongs), named with its value.

    A ``TypeError``, as Python's conventions ask; also a ``ValueError`` (through :class:`ParameterError`),
    so that code catching the library's argument errors as ``ValueError`` (the ``sepconv`` command
    among it) catches it too.
    """
