"""``sepconv calc``: figures against hand-worked formulas; errors are one line with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from tests.helpers.cli import run_sepconv as _run

from sepconv.cli.main import main


def test_calc_json_figures(capsys):
    code = main(
        [
            "calc",
            "--in-channels",
            "16",
            "--out-channels",
            "32",
            "--kernel-size",
            "3",
            "--input-size",
            "10",
            "--json",
        ]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    rows = {(row["kind"], row["groups"]): row for row in report["rows"]}
    assert report["output_size"] == [10, 10]  # 'same' padding by default
    assert rows[("standard", 1)]["params"] == 4608 + 32
    assert rows[("standard", 1)]["macs"] == 4608 * 100
    assert rows[("grouped", 4)]["params"] == 4608 // 4 + 32
    assert rows[("depthwise x2", 16)]["params"] == 32 * 9 + 32
    assert rows[("separable", None)]["params"] == 656 + 32
    assert rows[("separable", None)]["macs"] == 656 * 100
    assert [row["groups"] for row in report["rows"][:-1]] == [1, 2, 4, 8, 16]
    assert report["separable_ratio_formula"] == 1 / 32 + 1 / 9


def test_calc_valid_padding_and_stride(capsys):
    assert (
        main(
            [
                "calc",
                "--input-size",
                "128",
                "--in-channels",
                "3",
                "--out-channels",
                "10",
                "--padding",
                "0",
                "--json",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["output_size"] == [126, 126]
    assert main(["calc", "--input-size", "224,112", "--stride", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["output_size"] == [112, 56]


def test_calc_table_mentions_units_and_formula(capsys):
    assert main(["calc"]) == 0
    out = capsys.readouterr().out
    assert "separable" in out and "1/out_channels + 1/k^2 = 1/64 + 1/9" in out and "FLOPs = 2 x MACs" in out


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("--in-channels", "0", "an integer in [1, 1,048,576]"),
        ("--in-channels", "-3", "an integer in [1, 1,048,576]"),
        ("--in-channels", "nan", "an integer in [1, 1,048,576]"),
        ("--in-channels", "2000000", "an integer in [1, 1,048,576]"),  # would enumerate ~2e6 group counts
        ("--out-channels", "inf", "an integer in [1, 1,048,576]"),
        ("--out-channels", "1.5", "an integer in [1, 1,048,576]"),
        ("--kernel-size", "0", "a positive integer"),
        ("--stride", "-1", "a positive integer"),
        ("--dilation", "nan", "a positive integer"),
        ("--depth-multiplier", "0", "a positive integer"),
        ("--padding", "-1", "a non-negative integer, 'valid' or 'same'"),
        ("--padding", "full", "a non-negative integer, 'valid' or 'same'"),
        ("--padding", "inf", "a non-negative integer, 'valid' or 'same'"),
    ],
)
def test_numeric_flags_are_refused_naming_flag_and_value(capsys, flag, value, expected):
    code, out, err = _run(["calc", f"{flag}={value}", "--json"], capsys)
    assert code == 2
    assert out == ""
    assert (
        err
        == f"sepconv calc: error: argument {flag}: must be {expected}, got {value!r} (see 'sepconv calc --help')\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--input-size", "32,3,5,5"],
            "--input-size 32,3,5,5: calc counts one image, so its batch N must be 1; give C,H,W, got N=32",
        ),
        (
            ["--input-size", "1,2,3,4,5"],
            "--input-size 1,2,3,4,5: calc counts one image, a 2-D image; give C,H,W",
        ),
        (
            ["--input-size", "16,8,8", "--in-channels", "8"],
            "--input-size 16,8,8 has 16 channels, and --in-channels is 8; give the channels once, or the same "
            "number in both",
        ),
        (
            ["--kernel-size", "7", "--padding", "valid", "--input-size", "32,5,5"],
            "--kernel-size 7 with --dilation 1 spans 7 pixels, more than --input-size 32,5,5 padded by --padding "
            "valid (5 + 2*0); use a smaller kernel or dilation, more padding, or --padding same",
        ),
    ],
)
def test_inputs_refused_by_the_command_are_one_line(capsys, args, message):
    code, out, err = _run(["calc", *args], capsys)
    assert (code, out, err) == (2, "", f"sepconv calc: error: {message}\n")


def test_padding_flag_normalises_integers(capsys):
    assert main(["calc", "--padding", "+2", "--input-size", "10", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["padding"] == "2"
    assert report["output_size"] == [12, 12]  # 10 + 2*2 - 3 + 1


@pytest.mark.slow  # a fresh interpreter imports torch: seconds on a busy 2-core machine
def test_calc_bad_input_is_one_line_exit_2_from_the_real_command():
    result = subprocess.run(
        [sys.executable, "-m", "sepconv", "calc", "--in-channels", "0"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        "sepconv calc: error: argument --in-channels: must be an integer in [1, 1,048,576], got '0' "
        "(see 'sepconv calc --help')\n"
    )


def test_calc_formula_uses_the_depth_multiplier_given(capsys):
    # m = 2, C_out = 64, k = 3: separable / standard = 2 x (1/64 + 1/9) = 0.25347..., which is exactly
    # the ratio of the separable and standard MAC rows (same output size, 'same' padding).
    args = [
        "calc",
        "--in-channels",
        "16",
        "--out-channels",
        "64",
        "--depth-multiplier",
        "2",
        "--input-size",
        "8",
    ]
    assert main([*args, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    rows = {row["kind"]: row for row in report["rows"]}
    assert report["separable_ratio_formula"] == pytest.approx(2 * (1 / 64 + 1 / 9), rel=1e-15)
    assert report["separable_ratio_formula"] == pytest.approx(rows["separable"]["macs_ratio"], rel=1e-15)
    assert rows["separable"]["macs"] == 64 * (16 * 2 * 9 + 16 * 2 * 64)  # 8x8 pixels, dw + pw per pixel
    assert main(args) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "m x (1/out_channels + 1/k^2) = 2 x (1/64 + 1/9) = 0.2535 (depth multiplier m = 2" in text
    assert "depth multiplier 1" not in text


def test_calc_kernel_larger_than_the_padded_input_names_the_flags(capsys):
    # 3x3 at dilation 4 spans 4 * 2 + 1 = 9 pixels; the input is 5 + 2 * 1 = 7 high with padding 1.
    code, out, err = _run(
        ["calc", "--kernel-size", "3", "--dilation", "4", "--padding", "1", "--input-size", "32,5,20"], capsys
    )
    assert (code, out) == (2, "")
    assert err == (
        "sepconv calc: error: --kernel-size 3 with --dilation 4 spans 9 pixels, more than --input-size 32,5,20 "
        "padded by --padding 1 (5 + 2*1); use a smaller kernel or dilation, more padding, or --padding same\n"
    )
