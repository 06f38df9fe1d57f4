"""Entry point of the ``sepconv`` command: finds the subcommand modules and turns user errors into one line.

Every module in this package that does not start with an underscore (and is not this one) is a
subcommand: it defines ``register(subparsers)``, which adds its parser and sets ``handler`` to a
function ``(args) -> int``. Subcommand modules import heavy libraries inside their handler only, so
``sepconv --help`` stays fast.

Errors the user can act on print one line on stderr and exit with code 2: :class:`SepconvError`
(``UsageError`` included), ``ValueError`` (the library's argument errors, ``CheckpointError`` included)
and ``OSError`` (a missing, unreadable or unwritable file). An error about one parameter (its ``.param``)
is led by the flag that set it (:func:`user_message`, the one place that maps parameters to flags:
library messages never name a flag). ``SEPCONV_DEBUG=1`` shows their traceback
instead. Any other exception is a bug and keeps its traceback (exit code 1). Ctrl-C prints
"interrupted" and what the command had to say about it, exit code 130.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import re
import sys
from collections.abc import Iterable, Sequence
from typing import Any, NoReturn

import sepconv.cli
from sepconv.errors import SepconvError, UsageError

__all__ = ["UsageError", "build_parser", "flag_words", "main", "user_message"]

_NOT_COMMANDS = {"main"}


# Actions that are meant to be given more than once (or that end the parse).
_REPEATABLE_ACTIONS = (
    argparse._AppendAction,
    argparse._AppendConstAction,
    argparse._CountAction,
    argparse._HelpAction,
    argparse._VersionAction,
    argparse._SubParsersAction,
)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors, and no silent last-one-wins.

    A flag that takes a value (``--seed 1 --seed 2``), or two flags that set the same value, would
    quietly keep the last; here either is refused in one line naming the flag. A switch repeated
    (``--json --json``) means the same thing twice and passes; flags meant to repeat
    (``action="append"``) are not affected.
    """

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        self._given: dict[str, argparse.Action] = {}  # dest -> the action that set it, for this parse
        return super().parse_known_args(args, namespace)

    def _get_values(self, action: argparse.Action, arg_strings: list[str]) -> Any:
        # argparse calls this once per occurrence of a flag, before storing what it returns.
        if action.option_strings and not isinstance(action, _REPEATABLE_ACTIONS):
            given = getattr(self, "_given", {})
            earlier = given.get(action.dest)
            if earlier is action and action.nargs == 0:
                return super()._get_values(action, arg_strings)  # --json --json: the same, harmless
            if earlier is action:
                self.error(f"argument {'/'.join(action.option_strings)}: given twice; give it once")
            if earlier is not None:
                self.error(
                    f"argument {'/'.join(action.option_strings)}: not allowed with "
                    f"{'/'.join(earlier.option_strings)}, which sets the same option; give one of them"
                )
            given[action.dest] = action
        return super()._get_values(action, arg_strings)

    def error(self, message: str) -> NoReturn:
        # argparse prints the whole usage block first; one line (with where to get help) is enough.
        message = " ".join(message.split())  # one line, whatever a type function put in it
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _command_modules() -> list[str]:
    return sorted(
        info.name
        for info in pkgutil.iter_modules(sepconv.cli.__path__)
        if not info.name.startswith("_") and info.name not in _NOT_COMMANDS
    )


def build_parser() -> argparse.ArgumentParser:
    """The full ``sepconv`` argument parser, with every subcommand registered."""
    from sepconv import __version__

    parser = _Parser(prog="sepconv", description="Efficient convolutions for PyTorch.")
    parser.add_argument("--version", action="version", version=f"sepconv {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)
    for name in _command_modules():
        importlib.import_module(f"sepconv.cli.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``sepconv`` with ``argv`` (default: the process arguments); returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except BrokenPipeError:
        # The reader (`| head`) went away; nothing left to say to it.
        return 0
    except KeyboardInterrupt as interrupt:
        # A command may say where it stopped and how to resume: KeyboardInterrupt("last checkpoint: ...").
        detail = str(interrupt)
        print(f"sepconv {args.command}: interrupted" + (f": {detail}" if detail else ""), file=sys.stderr)
        return 130
    except (SepconvError, ValueError, OSError) as error:
        # Only the errors sepconv raises for users; anything else is a bug and keeps its traceback.
        if _debug():
            raise
        print(f"sepconv {args.command}: error: {user_message(error, parser, args.command)}", file=sys.stderr)
        return 2


def user_message(error: BaseException, parser: argparse.ArgumentParser, command: str) -> str:
    """``error``'s message as one line, in the words of ``command``: the parameters it names become flags.

    Library errors name parameters, never flags (:attr:`sepconv.errors.SepconvError.param`); this is
    the one place where a parameter becomes the flag the user typed: the subcommand's argument whose
    ``dest`` is the parameter (``input_size`` is set by ``--input-size``, ``out_dir`` by ``--out``; a
    positional argument is named by its metavar). Each parameter in the error's ``mentions`` becomes
    its flag wherever the message names it as a word of its own (``set devices to at most 4; use a
    smaller batch_size``). ``param`` becomes its flag where the message names it as a word of its own:
    at its start (``lr must be ...``), and anywhere for a name no sentence uses otherwise (``use a
    smaller batch_sizes``: a name with an underscore; "nothing to resume" keeps its word). Where no
    parameter became a flag (``model_kwargs['a'] must hold finite numbers``), ``param``'s flag leads.
    """
    message = " ".join(str(error).split()) or type(error).__name__
    flags = _command_flags(parser, command)
    param = getattr(error, "param", None)
    mentions = tuple(getattr(error, "mentions", ()))
    message, renamed = _put_flags(message, {name: flags[name] for name in mentions if name in flags})
    if not isinstance(param, str) or param not in flags or param in mentions:
        return message
    flag = flags[param]
    # The parameter as a word of its own: not part of a longer name, a quoted value or an item (`x['a']`).
    word = re.compile(rf"(?<![\w'\-.]){re.escape(param)}(?![\w'\[.])")
    spans = [match.span() for match in word.finditer(message) if "_" in param or match.start() == 0]
    if not spans:
        return message if renamed else f"{flag}: {message}"
    for start, end in reversed(spans):
        message = message[:start] + flag + message[end:]
    return message


def flag_words(text: str, parameters: Iterable[str], command: str) -> str:
    """``text`` (a warning, a report) with each of ``parameters`` that it names as a word put as ``command``'s flag.

    For what a command prints besides its errors: the same mapping as :func:`user_message`'s, so a
    warning names ``--max-error`` where the library wrote ``max_relative_error``.
    """
    flags = _command_flags(build_parser(), command)
    return _put_flags(text, {name: flags[name] for name in parameters if name in flags})[0]


def _put_flags(text: str, flags: dict[str, str]) -> tuple[str, bool]:
    """``text`` with each parameter of ``flags`` that stands as a word replaced by its flag; and whether any was."""
    renamed = False
    for parameter, flag in flags.items():
        # Not part of a longer name or a flag (`max_relative_error`, `--depth-multiplier`).
        text, count = re.subn(rf"(?<![\w-]){re.escape(parameter)}(?!\w)", flag, text)
        renamed = renamed or count > 0
    return text, renamed


def _command_flags(parser: argparse.ArgumentParser, command: str) -> dict[str, str]:
    """Each ``dest`` of ``command`` and the flag (its long form) or positional metavar that sets it."""
    commands = next(
        (action.choices for action in parser._actions if isinstance(action, argparse._SubParsersAction)), {}
    )
    subparser = commands.get(command)
    flags: dict[str, str] = {}
    for action in subparser._actions if subparser is not None else ():
        if isinstance(action, argparse._HelpAction) or action.dest in flags:
            continue
        if not action.option_strings:
            flags[action.dest] = str(action.metavar or action.dest)
            continue
        long_forms = [option for option in action.option_strings if option.startswith("--")]
        flags[action.dest] = (long_forms or action.option_strings)[0]
    return flags


def _debug() -> bool:
    return os.environ.get("SEPCONV_DEBUG", "") not in ("", "0")


if __name__ == "__main__":
    sys.exit(main())
