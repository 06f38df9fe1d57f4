"""``--input-size`` means one thing on every command: C,H,W, with an optional leading batch N.

Every command that takes it accepts the same forms (checked in the parsed flag, and end to end in the
``--json`` document), refuses the same bad ones with the same one-line message, and takes the old
spatial-only H or H,W with a one-line deprecation note. The list of commands is found from the parser,
so a new command with ``--input-size`` is covered (or this test says it is missing).
"""

from __future__ import annotations

import json

import pytest
from tests.helpers.cli import run_sepconv
from tests.helpers.optimize_run import install_mac_clock

from sepconv.cli._common import InputSize, input_size
from sepconv.cli.main import build_parser

# Each command's smallest valid call that reads --input-size (besides the flag itself); "{out}" is a
# folder for the files it writes.
COMMANDS = {
    "animate": ["animate", "--json"],
    "bench": ["bench", "standard_cnn", "--paths", "eager", "--seconds", "0", "--json"],
    "calc": ["calc", "--json"],
    "compare": ["compare", "standard_cnn", "standard_cnn", "--repeats", "1", "--samples", "2", "--json"],
    "convert": ["convert", "standard_cnn", "--out", "{out}/m.safetensors", "--calibration", "none", "--json"],
    "export": ["export", "standard_cnn", "--onnx", "{out}/m.onnx", "--json"],
    "rf": ["rf", "standard_cnn", "--layer", "features.0", "--out", "{out}/rf.png", "--json"],
    "summary": ["summary", "standard_cnn", "--json"],
    "optimize": [
        "optimize",
        "standard_cnn",
        "--latency-ms",  # a budget every plan meets, whatever the timings: never refused
        "1000000",
        "--rounds",
        "0",
        "--out",
        "{out}/opt",
        "--json",
    ],
}
# Commands whose runs take seconds (a model exported, timed or converted): their end-to-end check is slow.
SLOW = {"bench", "compare", "convert", "export", "optimize"}


def _call(command: str, folder: object) -> list[str]:
    return [part.format(out=folder) for part in COMMANDS[command]]


def test_every_command_with_input_size_is_listed_here():
    parser = build_parser()
    subparsers = next(action for action in parser._actions if action.dest == "command")
    taking = {
        name
        for name, subparser in subparsers.choices.items()
        for action in subparser._actions
        if "--input-size" in action.option_strings and action.type is input_size
    }
    # diagram's --input-size is the deprecated spelling of its --output-size (another meaning).
    assert taking == set(COMMANDS)


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1,16,16", InputSize("1,16,16", None, 1, (16, 16))),
        ("1,1,16,16", InputSize("1,1,16,16", 1, 1, (16, 16))),
        ("4,3,20,24", InputSize("4,3,20,24", 4, 3, (20, 24))),
        ("3x20x24", InputSize("3x20x24", None, 3, (20, 24))),
    ],
)
def test_the_same_forms_parse_the_same_on_every_command(command, text, expected, tmp_path, capsys):
    args = build_parser().parse_args([*_call(command, tmp_path), "--input-size", text])
    assert args.input_size == expected
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("text", ["0,16,16", "1,16,-3", "a,b,c", "1.5,16,16", "", "1,1,1,1,16,16", "3,,16"])
def test_bad_forms_are_refused_with_the_same_message(command, text, tmp_path, capsys):
    code, out, err = run_sepconv([*_call(command, tmp_path), "--input-size", text], capsys)
    assert (code, out, err) == (
        2,
        "",
        f"sepconv {command}: error: argument --input-size: must be C,H,W or N,C,H,W of positive integers, "
        f"got {text!r} (see 'sepconv {command} --help')\n",
    )


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize(("text", "spatial"), [("16", (16, 16)), ("16,20", (16, 20))])
def test_the_old_spatial_form_passes_with_a_one_line_note(command, text, spatial, tmp_path, capsys):
    args = build_parser().parse_args([*_call(command, tmp_path), "--input-size", text])
    assert args.input_size == InputSize(text, None, None, spatial)
    assert capsys.readouterr().err == (
        f"sepconv {command}: warning: --input-size {text} (H or H,W) is deprecated; give C,H,W (channels "
        "first) or N,C,H,W\n"
    )


def _size_in_json(command: str, document: dict) -> list[int]:
    """The one image's C,H,W the command ran at, as its JSON document reports it."""
    if command == "calc":
        return [document["in_channels"], *document["input_size"]]
    if command == "animate":
        return [document["geometry"]["in_channels"], *document["geometry"]["input_size"]]
    if command == "summary":
        return document["input_shapes"][0][1:]
    if command == "rf":
        return document["input_shape"]
    if command == "export":
        return document["onnx"]["input_size"]
    if command == "optimize":
        return document["layers"][0]["input_shape"]  # the stem sees the image
    return document["input_size"]  # bench, compare, convert


def _end_to_end_cases():
    for command in sorted(COMMANDS):
        marks = [pytest.mark.slow] if command in SLOW else []
        for text in ("1,16,16", "1,1,16,16"):
            yield pytest.param(command, text, marks=marks, id=f"{command}-{text}")


@pytest.mark.parametrize(("command", "text"), list(_end_to_end_cases()))
def test_every_command_runs_at_the_size_given(command, text, tmp_path, capsys, monkeypatch):
    if command == "optimize":
        # What is checked is the size the sites were found at, not a latency: the MAC clock stands in
        # for the per-layer and end-to-end timings (half a minute of the suite per case); the sites,
        # sensitivity, plan and the exported file are real, at the size given.
        install_mac_clock(monkeypatch)
    code, out, err = run_sepconv([*_call(command, tmp_path), "--input-size", text], capsys)
    assert code == 0, err  # stderr may say that the training kernels compile (once per machine)
    assert _size_in_json(command, json.loads(out)) == [1, 16, 16]


@pytest.mark.parametrize(
    ("command", "reason"),
    [
        ("animate", "animate draws one input"),
        ("calc", "calc counts one image"),
        ("convert", "convert counts MACs per image"),
        ("export", "export writes the file with a dynamic batch dimension"),
        ("rf", "rf maps one unit of one image"),
    ],
)
def test_a_batch_is_refused_where_the_command_works_on_one_image(command, reason, tmp_path, capsys):
    code, out, err = run_sepconv([*_call(command, tmp_path), "--input-size", "2,1,16,16"], capsys)
    assert (code, out) == (2, "")
    assert err == (
        f"sepconv {command}: error: --input-size 2,1,16,16: {reason}, so its batch N must be 1; give C,H,W, "
        "got N=2\n"
    )


@pytest.mark.parametrize(
    ("command", "flag", "value"), [("bench", "--batch-sizes", "1,16"), ("compare", "--batch-size", "4")]
)
def test_the_batch_is_set_once(command, flag, value, tmp_path, capsys):
    code, out, err = run_sepconv(
        [*_call(command, tmp_path), "--input-size", "2,1,16,16", flag, value], capsys
    )
    assert (code, out, err) == (
        2,
        "",
        f"sepconv {command}: error: --input-size 2,1,16,16 sets the batch to 2, and {flag} sets it too; give "
        "the batch once\n",
    )


@pytest.mark.slow
def test_n_is_the_batch_where_the_command_runs_batches(tmp_path, capsys):
    code, out, _ = run_sepconv([*_call("compare", tmp_path), "--input-size", "3,1,16,16"], capsys)
    assert code == 0 and json.loads(out)["batch_size"] == 3
    code, out, _ = run_sepconv([*_call("bench", tmp_path), "--input-size", "3,1,16,16"], capsys)
    assert code == 0 and [row["batch_size"] for row in json.loads(out)["results"]] == [3]
    # The same N given twice is one batch, not a conflict.
    code, out, _ = run_sepconv(
        [*_call("compare", tmp_path), "--input-size", "3,1,16,16", "--batch-size", "3"], capsys
    )
    assert code == 0 and json.loads(out)["batch_size"] == 3


def test_channels_given_twice_must_agree(capsys):
    code, out, _ = run_sepconv(["calc", "--input-size", "8,16,16", "--in-channels", "8", "--json"], capsys)
    assert code == 0 and json.loads(out)["in_channels"] == 8
    code, out, err = run_sepconv(["animate", "--input-size", "2,4,4", "--in-channels", "3", "--json"], capsys)
    assert (code, out) == (2, "")
    assert err == (
        "sepconv animate: error: --input-size 2,4,4 has 2 channels, and --in-channels is 3; give the channels "
        "once, or the same number in both\n"
    )


def test_summary_takes_the_model_channels_for_the_old_form_and_a_batch(capsys):
    code, out, _ = run_sepconv(["summary", "standard_cnn", "--input-size", "20", "--json"], capsys)
    assert code == 0 and json.loads(out)["input_shapes"] == [[1, 1, 20, 20]]
    code, out, _ = run_sepconv(["summary", "standard_cnn", "--input-size", "5,1,20,20", "--json"], capsys)
    assert code == 0 and json.loads(out)["input_shapes"] == [[5, 1, 20, 20]]
