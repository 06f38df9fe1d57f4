"""``sepconv animate``: the file it writes, its JSON against F.conv2d, and one-line errors with exit code 2."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from tests.helpers.cli import run_sepconv


def test_animate_writes_a_gif_with_one_frame_per_output_cell(tmp_path, capsys):
    path = tmp_path / "conv.gif"
    code, out, err = run_sepconv(
        ["animate", "--input-size", "5", "--kernel-size", "3", "--stride", "2", "--out", str(path)], capsys
    )
    assert code == 0, err
    assert out.strip() == f"wrote {path}: 4 frames"  # (5 - 3) // 2 + 1 = 2 per axis
    with Image.open(path) as gif:
        assert gif.n_frames == 4


def test_animate_json_values_equal_conv2d_and_write_no_file(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_sepconv(
        [
            "animate",
            "--input-size",
            "4,5",
            "--kernel-size",
            "2,4",
            "--padding",
            "same",
            "--in-channels",
            "2",
            "--json",
        ],
        capsys,
    )
    assert code == 0, err
    document = json.loads(out)
    (step,) = document["steps"]
    # 'same' with kernel (2, 4) at stride 1: rows padded (0, 1), cols (1, 2): worked out by hand.
    x = torch.tensor(step["grid"], dtype=torch.float64)[:, :-1, 1:-2]
    weight = torch.tensor(step["kernel"], dtype=torch.float64)
    expected = F.conv2d(F.pad(x[None], (1, 2, 0, 1)), weight)[0]
    # Small integers (seeded): the sums are exact, so the values are equal to the last bit.
    assert torch.equal(torch.tensor(document["output"], dtype=torch.float64), expected)
    frame_values = [frame["value"] for frame in step["frames"]]
    assert frame_values == expected.flatten().tolist()
    assert document["out"] is None and list(tmp_path.iterdir()) == []


def test_animate_layer_takes_the_geometry_of_a_mobilenet_depthwise_layer(capsys):
    code, out, err = run_sepconv(["animate", "--layer", "mobilenet_v2:features.2.conv.1.0", "--json"], capsys)
    assert code == 0, err
    document = json.loads(out)
    (step,) = document["steps"]
    # torchvision's MobileNetV2 features.2.conv.1.0: 3x3 depthwise, stride 2, padding 1 (96 channels,
    # drawn as 3 of them).
    assert (step["stride"], step["groups"]) == ([2, 2], 3)
    assert torch.tensor(step["kernel"]).shape == (3, 1, 3, 3)
    assert document["geometry"]["padding"] == [1, 1]
    assert {frame["out_channel"]: frame["in_channels"] for frame in step["frames"]} == {
        0: [0],
        1: [1],
        2: [2],
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        # the library names its parameter; the command line's one mapping (cli/main.py) names the flag
        (["--input-size", "1,3,3", "--kernel-size", "5"], "--kernel-size=5 with dilation=1 spans 5 pixels"),
        (["--in-channels", "3", "--out-channels", "4", "--groups", "2"], "groups=2"),
        (["--layer", "mobilenet_v2:features.2.conv.9"], "features.2.conv.1.0"),
        (["--layer", "mobilenet_v2:features.2.conv.1.0", "--kernel-size", "5"], "--layer sets the geometry"),
        (["--transposed", "--stride", "2", "--output-padding", "2"], "--output-padding=2 must be smaller"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_no_file(tmp_path, capsys, args, message):
    path = tmp_path / "conv.gif"
    code, out, err = run_sepconv(["animate", *args, "--out", str(path)], capsys)
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and err.startswith("sepconv animate: error:") and message in err
    assert list(tmp_path.iterdir()) == []


def test_unwritable_out_path_is_one_line_exit_2_and_no_file(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    code, out, err = run_sepconv(
        ["animate", "--input-size", "1,3,3", "--out", str(blocker / "conv.gif")], capsys
    )
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and "is not a folder" in err
    assert [p.name for p in tmp_path.iterdir()] == ["file"]
