"""No silent last-one-wins and no silently ignored flag: either is refused in one line naming the flag."""

from __future__ import annotations

import pytest
from tests.helpers.cli import run_sepconv


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["calc", "--stride", "2", "--stride", "3"], "argument --stride: given twice; give it once"),
        (
            ["calc", "--kernel-size", "3", "--kernel", "5"],
            "argument --kernel-size: given twice; give it once",
        ),
        (["train", "--seed", "1", "--seed", "2"], "argument --seed: given twice; give it once"),
        (["evaluate", "m.safetensors", "--split", "val", "--split", "test"], "argument --split: given twice"),
    ],
)
def test_a_value_flag_given_twice_is_refused(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_sepconv(args, capsys)
    assert code == 2 and out == ""
    assert err == f"sepconv {args[0]}: error: {message}{err.split(message, 1)[1]}"
    assert err.count("\n") == 1 and f"(see 'sepconv {args[0]} --help')" in err
    assert list(tmp_path.iterdir()) == []


def test_a_switch_repeated_means_the_same_and_passes(capsys):
    code, out, err = run_sepconv(["calc", "--json", "--json", "--input-size", "32,4,4"], capsys)
    assert code == 0 and err == ""
    assert '"output_size": [\n    4,\n    4\n  ]' in out


def test_append_flags_still_repeat(capsys):
    # --model-arg is meant to be given once per argument; the refusal below comes from the unknown
    # model argument, after both were parsed.
    code, _, err = run_sepconv(
        ["train", "--model-arg", "num_classes=3", "--model-arg", "bogus=1", "--out", "/nonexistent/x"], capsys
    )
    assert code == 2 and "given twice" not in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--depth-multiplier", "2"],
            "--depth-multiplier 2 applies to --depthwise or --separable only; add one of them or drop it",
        ),
        (["--output-padding", "1"], "--output-padding 1 applies to --transposed only; add it or drop it"),
        (
            ["--depthwise", "--in-channels", "2", "--out-channels", "3"],
            "--out-channels 3 has no effect with --depthwise (out-channels = in-channels x --depth-multiplier); "
            "drop it, or use --separable for a pointwise step to that many channels",
        ),
        (["--fps", "5"], "--fps 5 has no effect with --json and no --out (nothing is written)"),
        (
            ["--layer", "standard_cnn:features.0.0", "--output-padding", "1"],
            "--layer sets the geometry; drop --output-padding",
        ),
    ],
)
def test_animate_refuses_a_flag_its_mode_would_ignore(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_sepconv(["animate", "--json", *args], capsys)
    assert (code, out, err) == (2, "", f"sepconv animate: error: {message}\n")
    assert list(tmp_path.iterdir()) == []


def test_animate_uses_those_flags_where_they_apply(capsys):
    # Depthwise with multiplier 2 over 2 channels: 4 output channels, one 3x3 filter each on a 5x5 input.
    code, out, _ = run_sepconv(
        ["animate", "--json", "--depthwise", "--in-channels", "2", "--depth-multiplier", "2"], capsys
    )
    assert code == 0
    assert '"depth_multiplier": 2' in out and '"output_padding": 0' in out
