"""``sepconv``'s error handling: user errors are one line (exit 2), bugs keep their traceback (exit 1).

Each test replaces one command's handler with a function that raises, so it checks what ``main`` does
with that exception, whatever the commands raise today.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys

import pytest

import sepconv.cli.calc
from sepconv.cli._common import finite_float, integer, non_negative_int, positive_float, positive_int
from sepconv.cli.main import build_parser, flag_words, main, user_message
from sepconv.errors import ArgumentTypeError, ParameterError, SepconvError, UsageError


def _raise_from_calc(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    def handler(args: argparse.Namespace) -> int:
        raise error

    # register() reads the module's `run` when the parser is built, i.e. inside main().
    monkeypatch.setattr(sepconv.cli.calc, "run", handler)


def test_usage_error_is_importable_from_every_old_place():
    import sepconv.cli._common
    import sepconv.cli.main

    assert sepconv.cli._common.UsageError is sepconv.cli.main.UsageError is UsageError
    assert issubclass(UsageError, SepconvError)


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (SepconvError("the loss diverged at step 12"), "the loss diverged at step 12"),
        (
            UsageError("--input-size must be H or H,W, got '1,2,3'"),
            "--input-size must be H or H,W, got '1,2,3'",
        ),
        (
            ValueError("widths must hold 4 channel counts,\n  got [4, 8]"),
            "widths must hold 4 channel counts, got [4, 8]",
        ),
        (
            FileNotFoundError(2, "No such file or directory", "missing.safetensors"),
            "[Errno 2] No such file or directory: 'missing.safetensors'",
        ),
        (IsADirectoryError(21, "Is a directory", "out"), "[Errno 21] Is a directory: 'out'"),
        (ValueError(), "ValueError"),  # no message: the type still says something
        # An error about one parameter is led by the flag that set it (cli/main.py maps it, once).
        (
            ParameterError("in_channels must be an integer in [1, 8], got 9", param="in_channels"),
            "--in-channels must be an integer in [1, 8], got 9",
        ),
        (
            ArgumentTypeError("stride must be a positive integer, got 1.5", param="stride"),
            "--stride must be a positive integer, got 1.5",
        ),
        # A parameter that calc has no flag for (a library-internal one) leaves the message as it is.
        (ParameterError("groups=3 must divide 16", param="groups"), "groups=3 must divide 16"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(monkeypatch, capsys, error, message):
    monkeypatch.delenv("SEPCONV_DEBUG", raising=False)
    _raise_from_calc(monkeypatch, error)
    assert main(["calc"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"sepconv calc: error: {message}\n"  # the message folded into one line


@pytest.mark.parametrize(
    ("command", "param", "shown"),
    [
        ("train", "out_dir", "--out"),  # a flag whose name is not its dest's
        ("train", "checkpoint_every_steps", "--checkpoint-every"),
        ("train", "lr", "--lr"),
        ("summary", "model", "MODEL"),  # a positional argument: its metavar
        ("bench", "input_size", "--input-size"),
        ("summary", "no_such_parameter", None),
    ],
)
def test_a_parameter_maps_to_the_flag_of_the_running_command(command, param, shown):
    message = user_message(ParameterError(f"{param} is bad", param=param), build_parser(), command)
    assert message == (f"{shown} is bad" if shown else f"{param} is bad")


@pytest.mark.parametrize(
    ("command", "error", "message"),
    [
        # Every mention of the parameter as a word becomes the flag.
        (
            "bench",
            ParameterError(
                "batch_sizes=2,5 needs about 3.0 GiB; use a smaller batch_sizes", param="batch_sizes"
            ),
            "--batch-sizes=2,5 needs about 3.0 GiB; use a smaller --batch-sizes",
        ),
        # Not a word of its own (an item of it, a longer name, a quoted value): the flag leads instead.
        (
            "train",
            ParameterError("model_kwargs['lr'] must hold finite numbers, got nan", param="model_kwargs"),
            "--model-arg: model_kwargs['lr'] must hold finite numbers, got nan",
        ),
        ("train", ParameterError("the base_lr is 'lr'", param="lr"), "--lr: the base_lr is 'lr'"),
        # A name that is also a word is the flag only where it leads: "nothing to resume" keeps its word.
        (
            "train",
            ParameterError("resume: run 1 has finished; nothing to resume", param="resume"),
            "--resume: run 1 has finished; nothing to resume",
        ),
        (
            "train",
            ParameterError("loss became nan (try a lower lr)", param="lr"),
            "--lr: loss became nan (try a lower lr)",
        ),
        (
            "train",
            ParameterError("out_dir 'x' holds files; give another out_dir", param="out_dir"),
            "--out 'x' holds files; give another --out",
        ),
        ("train", SepconvError("lr is not a flag here", param=None), "lr is not a flag here"),
    ],
)
def test_the_message_names_the_flag_in_place_of_the_parameter(command, error, message):
    assert user_message(error, build_parser(), command) == message


@pytest.mark.parametrize(
    ("command", "error", "message"),
    [
        # Each parameter the error mentions becomes its flag wherever it stands as a word.
        (
            "train",
            ParameterError(
                "devices=4 needs about 2.0 GiB; use a smaller devices; the activations alone need about "
                "1.0 GiB: use a smaller batch_size",
                param="devices",
                mentions=("devices", "batch_size"),
            ),
            "--devices=4 needs about 2.0 GiB; use a smaller --devices; the activations alone need about "
            "1.0 GiB: use a smaller --batch-size",
        ),
        # A flag spelled unlike the library's name (--max-error sets max_relative_error).
        (
            "convert",
            ParameterError(
                "max_relative_error applies with depth_multiplier='auto' only, got depth_multiplier=3",
                param="max_relative_error",
                mentions=("depth_multiplier", "max_relative_error"),
            ),
            "--max-error applies with --depth-multiplier='auto' only, got --depth-multiplier=3",
        ),
        # param not in the message but another parameter is: the message names a flag already, none leads.
        (
            "convert",
            ParameterError(
                "depth_multiplier='auto' picks ranks from the SVD, so init must be 'svd', got 'random'",
                param="init",
                mentions=("depth_multiplier",),
            ),
            "--depth-multiplier='auto' picks ranks from the SVD, so init must be 'svd', got 'random'",
        ),
    ],
)
def test_an_error_naming_two_parameters_names_both_flags(command, error, message):
    assert user_message(error, build_parser(), command) == message


def test_warnings_use_the_same_mapping():
    note = "at the rank max_relative_error=0.1 needs, ...; allow a larger max_relative_error"
    assert flag_words(note, ["max_relative_error", "depth_multiplier"], "convert") == (
        "at the rank --max-error=0.1 needs, ...; allow a larger --max-error"
    )
    assert flag_words("depth_multiplier=3", ["depth_multiplier"], "no_such_command") == "depth_multiplier=3"


@pytest.mark.parametrize(
    "error", [TypeError("bug"), KeyError("bug"), RuntimeError("bug"), AttributeError("bug")]
)
def test_other_exceptions_are_bugs_and_propagate(monkeypatch, capsys, error):
    _raise_from_calc(monkeypatch, error)
    with pytest.raises(type(error)) as raised:
        main(["calc"])
    assert raised.value is error
    assert capsys.readouterr().err == ""  # no "error:" line hiding it


@pytest.mark.slow  # a fresh interpreter imports torch: a few seconds on a busy 2-core machine
def test_a_bug_exits_1_with_its_traceback():
    script = (
        "import sys, sepconv.cli.calc as calc\n"
        "def run(args):\n"
        "    raise TypeError('unsupported operand in a handler')\n"
        "calc.run = run\n"
        "from sepconv.cli.main import main\n"
        "sys.exit(main(['calc']))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert result.stderr.rstrip().endswith("TypeError: unsupported operand in a handler")


def test_keyboard_interrupt_prints_interrupted_and_its_message_exit_130(monkeypatch, capsys):
    message = "last checkpoint: runs/a/checkpoints/step-40.state; resume with: sepconv train --resume runs/a"
    _raise_from_calc(monkeypatch, KeyboardInterrupt(message))
    assert main(["calc"]) == 130
    assert capsys.readouterr().err == f"sepconv calc: interrupted: {message}\n"


def test_bare_keyboard_interrupt_prints_interrupted_exit_130(monkeypatch, capsys):
    _raise_from_calc(monkeypatch, KeyboardInterrupt())
    assert main(["calc"]) == 130
    assert capsys.readouterr().err == "sepconv calc: interrupted\n"


@pytest.mark.parametrize("value", ["1", "yes", "true", "2", "off"])
def test_sepconv_debug_set_to_anything_but_0_reraises_user_errors(monkeypatch, capsys, value):
    # main._debug: any value other than "" and "0" turns it on (even "off": the variable is a switch).
    error = ValueError("bad value")
    _raise_from_calc(monkeypatch, error)
    monkeypatch.setenv("SEPCONV_DEBUG", value)
    with pytest.raises(ValueError) as raised:
        main(["calc"])
    assert raised.value is error  # the very exception, so its traceback is the handler's
    assert capsys.readouterr().err == ""  # no one-line summary on top of the traceback


@pytest.mark.parametrize("value", [None, "", "0"])
def test_sepconv_debug_unset_empty_or_0_keeps_the_one_line_error(monkeypatch, capsys, value):
    if value is None:
        monkeypatch.delenv("SEPCONV_DEBUG", raising=False)
    else:
        monkeypatch.setenv("SEPCONV_DEBUG", value)
    _raise_from_calc(monkeypatch, ValueError("bad value"))
    assert main(["calc"]) == 2
    assert capsys.readouterr().err == "sepconv calc: error: bad value\n"


def test_sepconv_debug_reraises_a_real_commands_error_with_the_same_message(monkeypatch, tmp_path, capsys):
    missing = tmp_path / "missing.safetensors"
    monkeypatch.setenv("SEPCONV_DEBUG", "0")
    assert main(["evaluate", str(missing)]) == 2
    assert capsys.readouterr().err == f"sepconv evaluate: error: model file not found: {missing}\n"
    monkeypatch.setenv("SEPCONV_DEBUG", "1")
    with pytest.raises(UsageError) as raised:
        main(["evaluate", str(missing)])
    assert str(raised.value) == f"model file not found: {missing}"


@pytest.mark.slow  # two fresh interpreters import torch: several seconds on a busy 2-core machine
def test_sepconv_debug_in_a_real_process_prints_the_traceback_and_exits_1(tmp_path):
    missing = tmp_path / "missing.safetensors"
    command = [sys.executable, "-m", "sepconv", "evaluate", str(missing)]
    environment = {key: value for key, value in os.environ.items() if key != "SEPCONV_DEBUG"}
    quiet = subprocess.run(command, capture_output=True, text=True, env=environment)
    assert (quiet.returncode, quiet.stderr) == (
        2,
        f"sepconv evaluate: error: model file not found: {missing}\n",
    )
    loud = subprocess.run(command, capture_output=True, text=True, env={**environment, "SEPCONV_DEBUG": "1"})
    assert loud.returncode == 1  # Python's own exit for an uncaught exception
    assert loud.stderr.startswith("Traceback (most recent call last):\n")
    assert loud.stderr.rstrip().endswith(f"sepconv.errors.UsageError: model file not found: {missing}")
    assert "sepconv evaluate: error:" not in loud.stderr


def test_broken_pipe_is_quiet_exit_0(monkeypatch, capsys):
    _raise_from_calc(monkeypatch, BrokenPipeError())
    assert main(["calc"]) == 0
    assert capsys.readouterr().err == ""


# --- argparse types for numeric flags ----------------------------------------------------------


@pytest.mark.parametrize(
    ("parse", "text", "value"),
    [
        (positive_int, "1", 1),
        (positive_int, "+12", 12),
        (non_negative_int, "0", 0),
        (integer(minimum=-2, maximum=2), "-2", -2),
        (positive_float, "3e-4", 3e-4),
        (finite_float(), "-1.5", -1.5),
        (finite_float(minimum=0, maximum=1), "1", 1.0),
        (finite_float(minimum=0, maximum=1), "0", 0.0),
    ],
)
def test_numeric_types_accept_values_in_range(parse, text, value):
    assert parse(text) == value


@pytest.mark.parametrize(
    ("parse", "text", "expected"),
    [
        (positive_int, "0", "must be a positive integer, got '0'"),
        (positive_int, "-3", "must be a positive integer, got '-3'"),
        (positive_int, "1.5", "must be a positive integer, got '1.5'"),
        (positive_int, "nan", "must be a positive integer, got 'nan'"),
        (non_negative_int, "-1", "must be a non-negative integer, got '-1'"),
        (integer(minimum=1, maximum=8), "9", "must be an integer in [1, 8], got '9'"),
        (positive_float, "nan", "must be a finite number > 0, got 'nan'"),
        (positive_float, "inf", "must be a finite number > 0, got 'inf'"),
        (positive_float, "-inf", "must be a finite number > 0, got '-inf'"),
        (positive_float, "1e400", "must be a finite number > 0, got '1e400'"),  # overflows to inf
        (positive_float, "0", "must be a finite number > 0, got '0'"),
        (positive_float, "abc", "must be a finite number > 0, got 'abc'"),
        (finite_float(), "nan", "must be a finite number, got 'nan'"),
        (
            finite_float(minimum=0, maximum=1, max_inclusive=False),
            "1",
            "must be a finite number in [0, 1), got '1'",
        ),
        (finite_float(maximum=0.5), "0.6", "must be a finite number <= 0.5, got '0.6'"),
    ],
)
def test_numeric_types_refuse_with_the_value(parse, text, expected):
    with pytest.raises(argparse.ArgumentTypeError) as raised:
        parse(text)
    assert str(raised.value) == expected


def test_numeric_types_have_readable_names():
    assert positive_int.__name__ == "a positive integer"
    assert non_negative_int.__name__ == "a non-negative integer"
    assert positive_float.__name__ == "a finite number > 0"
    assert finite_float(minimum=0, maximum=1, min_inclusive=False).__name__ == "a finite number in (0, 1]"


def test_numeric_type_factories_refuse_bad_bounds():
    with pytest.raises(ValueError, match="maximum must be a finite number or None, got inf"):
        finite_float(maximum=math.inf)
    with pytest.raises(ValueError, match="minimum must be <= maximum, got 2 > 1"):
        integer(minimum=2, maximum=1)


def test_a_refused_flag_is_one_line_naming_flag_and_value(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["calc", "--stride", "inf"])
    assert exited.value.code == 2
    assert capsys.readouterr().err == (
        "sepconv calc: error: argument --stride: must be a positive integer, got 'inf' (see 'sepconv calc --help')\n"
    )
