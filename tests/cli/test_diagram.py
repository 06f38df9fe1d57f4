"""``sepconv diagram``: writes a decodable picture, prints hand-checked counts; bad input is one line, exit 2,
no file."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from tests.helpers.cli import run_sepconv


def test_writes_png_and_prints_the_counts(tmp_path, capsys):
    out = tmp_path / "separable.png"
    args = ["diagram", "separable", "--in-channels", "4", "--out-channels", "8", "--output-size", "5"]
    code, stdout, stderr = run_sepconv([*args, "--out", str(out)], capsys)
    assert (code, stderr) == (0, "")
    with Image.open(out) as image:
        image.load()
        assert image.format == "PNG"
    # Depthwise 4*3*3 = 36 weights x 25 positions = 900 MACs; pointwise 4*8 = 32 x 25 = 800.
    assert "params           36  MACs             900" in stdout
    assert "params           32  MACs             800" in stdout
    assert "total params 68, MACs 1,700" in stdout
    assert stdout.splitlines()[-1] == f"wrote {out}"


def test_the_old_input_size_spelling_sets_the_output_size_with_a_note(tmp_path, capsys):
    out = tmp_path / "standard.png"
    args = ["diagram", "standard", "--in-channels", "2", "--out-channels", "2", "--out", str(out), "--json"]
    code, stdout, stderr = run_sepconv([*args, "--input-size", "3"], capsys)
    assert (code, stderr) == (
        0,
        "sepconv diagram: warning: --input-size is deprecated here; it sets the output size: give "
        "--output-size 3\n",
    )
    # 2 -> 2 channels, 3x3 kernel: 36 weights, each used at every one of the 3x3 output positions.
    assert json.loads(stdout)["total"]["macs"] == 36 * 9


def test_json_gives_the_structure(tmp_path, capsys):
    out = tmp_path / "shuffle.svg"
    args = ["diagram", "shuffle", "--in-channels", "4", "--out-channels", "4", "--groups", "2"]
    code, stdout, _ = run_sepconv(
        [*args, "--expand-ratio", "1", "--output-size", "2", "--out", str(out), "--json"], capsys
    )
    assert code == 0 and out.read_bytes().lstrip().startswith(b"<?xml")
    document = json.loads(stdout)
    # Hand-worked at 2x2: grouped 1x1 4 -> 4 in 2 groups has 2*4 = 8 weights (32 MACs); the shuffle none;
    # depthwise 3x3 on 4 channels 36 (144); grouped 1x1 again 8 (32). A standard 3x3 4 -> 4: 144 (576).
    assert [
        (s["name"], s["groups"], s["kernel_size"], s["params"], s["macs"]) for s in document["steps"]
    ] == [
        ("grouped 1x1", 2, 1, 8, 32),
        ("channel shuffle", 2, None, 0, 0),
        ("depthwise 3x3", 4, 3, 36, 144),
        ("grouped 1x1", 2, 1, 8, 32),
    ]
    assert document["total"] == {"params": 52, "macs": 208}
    assert document["standard"] == {"params": 144, "macs": 576}
    assert document["ratio"]["params"] == 52 / 144
    assert document["residual"] is True and document["path"] == str(out)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["grouped", "--in-channels", "6", "--groups", "4"], "groups=4 must divide in_channels=6"),
        (["standard", "--in-channels", "0"], "--in-channels"),
        (["standard", "--input-size", "-3"], "--input-size"),
        (["standard", "--output-size", "-3"], "--output-size"),
        (["standard", "--output-size", "3", "--input-size", "3"], "sets the same option"),
        (["depthwise", "--in-channels", "3", "--out-channels", "8"], "multiple of in_channels=3"),
        (["dilated"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_no_file(tmp_path, capsys, args, message):
    out = tmp_path / "d.png"
    code, stdout, stderr = run_sepconv(["diagram", *args, "--out", str(out)], capsys)
    assert code == 2 and stdout == ""
    assert stderr.startswith("sepconv diagram: error:") and message in stderr
    assert stderr.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_wrong_suffix_and_unwritable_path(tmp_path, capsys):
    code, _, stderr = run_sepconv(["diagram", "standard", "--out", str(tmp_path / "d.jpg")], capsys)
    assert code == 2 and "must end in .png or .svg" in stderr and stderr.count("\n") == 1
    blocker = tmp_path / "file"  # a file where the output folder should be: the write fails
    blocker.write_text("x")
    code, _, stderr = run_sepconv(["diagram", "standard", "--out", str(blocker / "d.png")], capsys)
    assert code == 2 and stderr.startswith("sepconv diagram: error:") and stderr.count("\n") == 1
    assert sorted(path.name for path in tmp_path.iterdir()) == ["file"]
