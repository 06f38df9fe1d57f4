"""Helpers shared by the subcommands: argument types for numeric flags, sizes, models and JSON output.

Numeric flags use the argument types below (``type=positive_int``, ``type=finite_float(minimum=0)``),
so that argparse itself refuses a bad value with one line naming the flag and the value, exit code 2::

    sepconv evaluate: error: argument --batch-size: must be a positive integer, got '0' (see ...)

- :func:`positive_int` (>= 1: sizes, counts, epochs), :func:`non_negative_int` (>= 0: workers),
  :func:`seed` (every ``--seed``: [0, 2**32 - 1]),
  :func:`integer` for other bounds;
  all thin wrappers over :mod:`sepconv.checks`, so a flag's bound reads as the library's does;
- :func:`finite_float` for floats: refuses ``nan`` and ``inf`` always, and values outside the bounds
  given (``finite_float(minimum=0, min_inclusive=False)`` is "> 0", e.g. ``--lr``);
  :data:`positive_float` is exactly that.

Output flags use the action :class:`OutputFile` (``action=OutputFile, suffixes=(".png", ".svg")``): the
suffix, and that the path is not a folder, device, FIFO or socket, are checked at parse time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sepconv.checks import check_float, check_int, check_int_sequence, describe_float, describe_integer
from sepconv.errors import UsageError

__all__ = [
    "HTML_SUFFIXES",
    "INPUT_SIZE_FORMS",
    "DeprecatedSpelling",
    "InputSize",
    "InputSizeAction",
    "OutputFile",
    "UsageError",
    "add_data_root",
    "add_dataset",
    "add_input_size",
    "add_json",
    "add_model",
    "check_output_file",
    "finite_float",
    "input_size",
    "integer",
    "model_channels",
    "model_image_size",
    "non_negative_int",
    "parse_int_list",
    "positive_float",
    "positive_int",
    "print_json",
    "progress_bar",
    "resolve_model",
    "seed",
]


def integer(*, minimum: int | None = None, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse ``type``: a decimal integer in ``[minimum, maximum]`` (either bound optional).

    The bound is worded as everywhere in sepconv (:func:`sepconv.checks.describe_integer`).

    >>> integer(minimum=1, maximum=8)("3")
    3
    >>> integer(minimum=1, maximum=8)("9")
    Traceback (most recent call last):
    argparse.ArgumentTypeError: must be an integer in [1, 8], got '9'
    """
    expected = describe_integer(minimum, maximum)

    def parse(text: str) -> int:
        try:
            return check_int("value", int(text), minimum=minimum, maximum=maximum)
        except ValueError:  # not a number, or out of bounds (a ParameterError is a ValueError)
            raise argparse.ArgumentTypeError(f"must be {expected}, got {text!r}") from None

    parse.__name__ = expected  # argparse and error messages show this name
    return parse


positive_int = integer(minimum=1)
positive_int.__doc__ = "An argparse ``type``: an integer >= 1 (a size, a count)."
non_negative_int = integer(minimum=0)
non_negative_int.__doc__ = "An argparse ``type``: an integer >= 0 (a number of workers)."
# numpy's RandomState (and so Lightning's seed_everything) takes seeds in [0, 2**32 - 1]; torch's
# manual_seed takes more, but one range for every --seed flag keeps them interchangeable.
MAX_SEED = 2**32 - 1
seed = integer(minimum=0, maximum=MAX_SEED)
seed.__doc__ = "An argparse ``type`` for every ``--seed``: an integer in [0, 2**32 - 1], what numpy accepts."


def finite_float(
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    min_inclusive: bool = True,
    max_inclusive: bool = True,
) -> Callable[[str], float]:
    """An argparse ``type``: a finite float (never ``nan`` or ``inf``) within the bounds given.

    ``min_inclusive=False`` makes the lower bound strict (``> minimum``), likewise ``max_inclusive``;
    the bound is worded as everywhere in sepconv (:func:`sepconv.checks.describe_float`).

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
    bounds: dict[str, Any] = {
        "minimum": minimum,
        "maximum": maximum,
        "min_inclusive": min_inclusive,
        "max_inclusive": max_inclusive,
    }
    expected = describe_float(**bounds)

    def parse(text: str) -> float:
        try:
            return check_float("value", float(text), **bounds)
        except ValueError:  # not a number, or out of bounds (a ParameterError is a ValueError)
            raise argparse.ArgumentTypeError(f"must be {expected}, got {text!r}") from None

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


# The one meaning of every --input-size, as its help and its refusals say it.
INPUT_SIZE_FORMS = "C,H,W or N,C,H,W"
INPUT_SIZE_HELP = (
    "one input's size: C,H,W (channels, height, width), or N,C,H,W with a batch size N; "
    "N,C,D,H,W for a 3-D model"
)


@dataclass(frozen=True)
class InputSize:
    """A parsed ``--input-size``: C,H,W with an optional leading batch N (the same on every command).

    ``channels`` is None for the deprecated H or H,W form, which left the channels to the command (the
    model's, or ``--in-channels``); ``spatial`` is (H, W), or (D, H, W) for a 3-D model's N,C,D,H,W.
    ``text`` is what the user typed, for messages.
    """

    text: str
    batch: int | None
    channels: int | None
    spatial: tuple[int, ...]

    def image(self, channels: int) -> tuple[int, ...]:
        """One image's (C, H, W): the channels given, else ``channels`` (the command's default)."""
        return (self.channels if self.channels is not None else channels, *self.spatial)

    def shape(self, channels: int) -> tuple[int, ...]:
        """The whole input's shape, batch first (1 when none was given)."""
        return (self.batch or 1, *self.image(channels))

    def batch_or(self, flag: str, given: Any, as_given: Any) -> Any:
        """The batch a command runs: the flag's value ``given``, else N (as the flag would hold it), else None.

        ``as_given`` is N in the flag's own form (``(8,)`` for ``--batch-sizes``); the flag and N both
        given and differing is refused in one line: the batch is set once.
        """
        if self.batch is None:
            return given
        if given is not None and given != as_given:
            raise UsageError(
                f"--input-size {self.text} sets the batch to {self.batch}, and {flag} sets it too; "
                "give the batch once"
            )
        return as_given

    def channels_or(self, flag: str, given: int | None) -> int | None:
        """The input channels: C, else the flag's value ``given``; both given and differing is refused."""
        if self.channels is None:
            return given
        if given is not None and given != self.channels:
            raise UsageError(
                f"--input-size {self.text} has {self.channels} channels, and {flag} is {given}; "
                "give the channels once, or the same number in both"
            )
        return self.channels

    def flat(self, why: str) -> tuple[int, int]:
        """(H, W) for a command that draws or counts one 2-D image: a batch N > 1 or a depth D is refused."""
        self.require_one_image(why)
        if len(self.spatial) != 2:
            raise UsageError(f"--input-size {self.text}: {why}, a 2-D image; give C,H,W")
        return self.spatial[0], self.spatial[1]

    def require_one_image(self, why: str) -> None:
        """Refuse a batch N > 1 in one line, for a command that works on one image (``why`` says so)."""
        if self.batch not in (None, 1):
            raise UsageError(
                f"--input-size {self.text}: {why}, so its batch N must be 1; give C,H,W, got N={self.batch}"
            )


def input_size(text: str) -> InputSize:
    """The argparse ``type`` of every ``--input-size``: C,H,W or N,C,H,W (N,C,D,H,W for a 3-D model).

    Sizes are positive integers separated by commas (or ``x``). The old H or H,W form (spatial only)
    still parses, with ``channels=None``; :class:`InputSizeAction` notes that it is deprecated.

    >>> input_size("3,96,96"), input_size("8,3,96,96").batch, input_size("56").spatial
    (InputSize(text='3,96,96', batch=None, channels=3, spatial=(96, 96)), 8, (56, 56))
    >>> input_size("3,0,96")
    Traceback (most recent call last):
    argparse.ArgumentTypeError: must be C,H,W or N,C,H,W of positive integers, got '3,0,96'
    """
    refusal = argparse.ArgumentTypeError(f"must be {INPUT_SIZE_FORMS} of positive integers, got {text!r}")
    try:
        sizes = check_int_sequence(
            "input_size", [int(part) for part in text.replace("x", ",").split(",")], lengths=(1, 2, 3, 4, 5)
        )
    except ValueError:  # not integers, none, too many, or one below 1 (a ParameterError is a ValueError)
        raise refusal from None
    if len(sizes) <= 2:
        return InputSize(text, None, None, (sizes[0], sizes[-1]))
    if len(sizes) == 3:
        return InputSize(text, None, sizes[0], sizes[1:])
    return InputSize(text, sizes[0], sizes[1], sizes[2:])


input_size.__name__ = f"{INPUT_SIZE_FORMS}"


class DeprecatedSpelling(argparse.Action):
    """An argparse action that stores the value, with a one-line note on stderr when it is an old spelling.

    Subclasses say what is deprecated in :meth:`note` (None: nothing); a script with the old spelling
    keeps working and learns the new one.
    """

    def note(self, values: Any) -> str | None:
        return None

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        note = self.note(values)
        if note is not None:
            print(f"{parser.prog}: warning: {note}", file=sys.stderr)
        setattr(namespace, self.dest, values)


class InputSizeAction(DeprecatedSpelling):
    """Stores an :class:`InputSize`; the deprecated H or H,W form passes with a one-line note on stderr."""

    def note(self, values: Any) -> str | None:
        if values.channels is not None:
            return None
        return f"--input-size {values.text} (H or H,W) is deprecated; give C,H,W (channels first) or N,C,H,W"


def model_channels(model: Any) -> int:
    """The input channels of ``model``'s registered size; 3 (RGB) for a model of unknown input."""
    from sepconv.models import default_input_size, model_spec

    return default_input_size(model)[0] if model_spec(model) is not None else 3


def model_image_size(size: InputSize | None, model: Any) -> tuple[int, ...] | None:
    """One image's (C, H, W) for ``--input-size`` on a command that runs ``model``; None: the model's own.

    The deprecated H or H,W form takes the model's channels. The batch N is the command's to use.
    """
    return None if size is None else size.image(model_channels(model))


def add_input_size(parser: argparse.ArgumentParser, help: str = INPUT_SIZE_HELP, **kwargs: Any) -> None:
    """``--input-size`` with its one meaning (:func:`input_size`); ``help`` adds the command's default."""
    parser.add_argument(
        "--input-size", type=input_size, action=InputSizeAction, metavar="C,H,W", help=help, **kwargs
    )


def add_model(parser: argparse.ArgumentParser, dest: str = "model", metavar: str = "MODEL") -> None:
    """The MODEL positional: a registered name or a sepconv model file (:func:`resolve_model`)."""
    parser.add_argument(
        dest,
        metavar=metavar,
        help="registered model name (mobilenet_v2, torchvision:resnet18) or sepconv model file / checkpoint",
    )


def add_json(parser: Any, help: str = "print one JSON document") -> None:
    """``--json``: the command prints one JSON document on stdout and nothing else there."""
    parser.add_argument("--json", action="store_true", help=help)


def add_data_root(parser: argparse.ArgumentParser) -> None:
    """``--data-root``: where torchvision data sets live (and are downloaded to)."""
    parser.add_argument("--data-root", default=None, help="where torchvision data sets live")


def add_dataset(parser: argparse.ArgumentParser, help: str, **kwargs: Any) -> None:
    """``--dataset``: a data set name (:func:`sepconv.data.load_dataset`); ``help`` says what for."""
    parser.add_argument("--dataset", help=help, **kwargs)


@contextlib.contextmanager
def progress_bar() -> Iterator[Callable[[str, int, int], None]]:
    """A progress bar on stderr, gone when the work is done; yields ``update(description, done, total)``.

    The callback has the shape of :class:`sepconv.timing.Progress`'s, which the library's long jobs
    (benchmarks, cost measurements) report through.
    """
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task("starting", total=None)
        yield lambda description, completed, total: bar.update(
            task, description=description, completed=completed, total=total
        )


def print_json(document: Any) -> None:
    """Print one JSON document on stdout (and nothing else there)."""
    json.dump(document, sys.stdout, indent=2)
    sys.stdout.write("\n")


def resolve_model(spec: str, **kwargs: Any) -> Any:
    """A MODEL argument: a model file written by sepconv (or a checkpoint's ``.state``), or a registered name.

    Names are those of ``sepconv.models.list_models()`` (``mobilenet_v2``, ``torchvision:resnet18``);
    ``kwargs`` (e.g. ``num_classes``) apply to names only.
    """
    from sepconv.models import create_model
    from sepconv.train.run_folder import WEIGHTS_SUFFIX, model_file_path

    path = model_file_path(spec)  # a training checkpoint's .state: the weights beside it
    spec = str(path) if path != Path(spec) else spec
    if path.suffix == WEIGHTS_SUFFIX or path.is_file():
        if not path.is_file():
            raise UsageError(f"checkpoint file not found: {spec}")
        from sepconv import load_model

        return load_model(path)
    return create_model(spec, **kwargs)


def check_output_file(
    flag: str, value: str | os.PathLike[str], suffixes: Sequence[str], *, folder_must_exist: bool = False
) -> Path:
    """``value`` as the path an output flag writes, checked before any work; else a one-line UsageError.

    Every output flag of every command goes through this (as the argparse action :class:`OutputFile`, or
    directly for a default path such as ``evaluate``'s PNG beside its model). Refused, naming ``flag``
    and ``value``: a suffix other than ``suffixes`` (case ignored); an existing path that is not a
    regular file (a folder, a device, a FIFO, a socket: writing would replace it; a symbolic link is
    written through to its regular file, see :func:`sepconv.io.atomic.check_output_path`); a path
    below a file; with ``folder_must_exist``, a missing folder.

    >>> check_output_file("--out", "picture.jpg", (".png", ".svg"))
    Traceback (most recent call last):
    sepconv.errors.UsageError: --out must end in .png or .svg, got 'picture.jpg'
    """
    from sepconv.io.atomic import OutputPathError, check_output_path

    text = os.fspath(value)
    path = Path(text)
    if path.suffix.lower() not in {suffix.lower() for suffix in suffixes}:
        raise UsageError(f"{flag} must end in {' or '.join(suffixes)}, got {text!r}")
    try:
        check_output_path(path, parameter=flag)
    except OutputPathError as error:
        raise UsageError(str(error)) from None
    folder = path.parent
    if folder_must_exist and not folder.is_dir():
        raise UsageError(f"{flag} {text!r}: folder {str(folder)!r} does not exist")
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent  # the missing folders below this one are created by the write
    if not folder.is_dir():
        raise UsageError(f"{flag} {text!r}: {str(folder)!r} is not a folder")
    return path


class OutputFile(argparse.Action):
    """An argparse action for an output flag: :func:`check_output_file` at parse time, stores a Path.

    ``parser.add_argument("--out", action=OutputFile, suffixes=(".png", ".svg"))``; a refusal is one
    line, exit code 2, before the command does anything.
    """

    def __init__(
        self,
        option_strings: Sequence[str],
        dest: str,
        *,
        suffixes: Sequence[str],
        folder_must_exist: bool = False,
        **kwargs: Any,
    ) -> None:
        self.suffixes = tuple(suffixes)
        self.folder_must_exist = folder_must_exist
        kwargs.setdefault("metavar", f"FILE{self.suffixes[0]}")
        super().__init__(option_strings, dest, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        flag = option_string or self.dest
        try:
            path = check_output_file(flag, values, self.suffixes, folder_must_exist=self.folder_must_exist)
        except UsageError as error:
            parser.error(str(error))
        setattr(namespace, self.dest, path)


HTML_SUFFIXES = (".html", ".htm")
