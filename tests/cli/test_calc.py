"""``sepconv calc``: figures against hand-worked formulas; errors are one line with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

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


def test_calc_bad_input_is_one_line_exit_2():
    for args in (["--in-channels", "0"], ["--padding", "full"], ["--input-size", "abc"], ["--bogus"]):
        result = subprocess.run(
            [sys.executable, "-m", "sepconv", "calc", *args], capture_output=True, text=True
        )
        assert result.returncode == 2, args
        assert result.stdout == ""
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "error" in lines[0], result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "sepconv", "calc", "--in-channels", "0"], capture_output=True, text=True
    )
    assert "in_channels must be a positive integer, got 0" in result.stderr
