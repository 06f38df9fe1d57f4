"""``sepconv rf``: a decodable picture, the numbers in --json, where the input came from; errors one line, exit 2."""

import json

import pytest
from PIL import Image
from tests.helpers.cli import override, run_sepconv

# standard_cnn's features.0 is a 3x3 conv with padding 1 (stride 1): unit (y, x) sees rows y-1..y+1.
BASE = ["rf", "standard_cnn", "--layer", "features.0", "--input-size", "1,12,12"]


@pytest.fixture
def picture(tmp_path):
    path = tmp_path / "photo.png"
    Image.new("RGB", (30, 20), (200, 40, 90)).save(path)
    return path


def test_writes_a_png_and_prints_the_numbers(tmp_path, picture, capsys):
    out = tmp_path / "rf.png"
    code, stdout, stderr = run_sepconv(
        [*BASE, "--position", "5,0", "--image", str(picture), "--out", str(out), "--json"], capsys
    )
    assert code == 0, stderr
    document = json.loads(stdout)
    assert document["theoretical_box"] == {"top": 4, "left": -1, "height": 3, "width": 3}
    assert document["theoretical_box_clipped"] == {"top": 4, "left": 0, "height": 3, "width": 2}
    assert document["extends_past_border"] is True
    assert document["receptive_field"] == [3, 3] and document["effective_stride"] == [1, 1]
    assert document["position"] == [5, 0] and document["output_size"] == [12, 12]
    assert document["channel"] == "sum"
    assert document["input"] == "photo.png (pixels scaled to [0, 1])"
    assert document["input_shape"] == [1, 12, 12]
    assert document["out"] == str(out)
    assert "gradient" not in document  # the numbers, not the map
    with Image.open(out) as written:
        written.load()  # decodes the whole file
        assert written.format == "PNG" and written.width > 400


def test_default_position_is_the_centre_and_inputs_say_where_they_came_from(tmp_path, capsys):
    out = tmp_path / "rf.svg"
    code, stdout, stderr = run_sepconv([*BASE, "--out", str(out), "--json"], capsys)
    assert code == 0, stderr
    document = json.loads(stdout)
    assert document["position"] == [6, 6]  # 12 // 2
    assert document["theoretical_box"] == {"top": 5, "left": 5, "height": 3, "width": 3}
    # 1x12x12 is no data set's size: seeded noise (a constant image would leave ReLUs silent)
    assert document["input"] == "random noise (seed 0, standard normal)"
    assert out.read_text().lstrip().startswith("<?xml")


def test_a_28x28_model_is_drawn_on_an_mnist5k_digit(tmp_path, capsys):
    out = tmp_path / "rf.png"
    code, stdout, stderr = run_sepconv(
        ["rf", "standard_cnn", "--layer", "features.2", "--out", str(out), "--json"], capsys
    )
    assert code == 0, stderr
    document = json.loads(stdout)
    assert document["input"] == "mnist5k test image 0"
    # two 3x3 convs then a 2x2 pool: 6 pixels, stride 2, centre 0.5 + 2 * 7 = 14.5 at the default (7, 7)
    assert document["theoretical_box"] == {"top": 12, "left": 12, "height": 6, "width": 6}


def test_plain_output_names_the_boxes(tmp_path, capsys):
    out = tmp_path / "rf.png"
    code, stdout, _ = run_sepconv([*BASE, "--position", "0,3", "--out", str(out)], capsys)
    assert code == 0
    assert "theoretical field: rows -1..1, columns 2..4 (3x3 pixels), extends past the border" in stdout


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--layer", "featurs.0"], "did you mean features.0"),
        (["--layer", "classifier.1"], "units see the whole input"),
        (["--position", "12,0"], "inside the 12x12 output of layer 'features.0'"),
        (["--position", "3"], "--position must be two integers"),
        (["--channel", "32"], "channel must be in [0, 31]"),
    ],
)
def test_bad_arguments_are_one_line_and_write_nothing(tmp_path, capsys, extra, message):
    out = tmp_path / "rf.png"
    code, _, stderr = run_sepconv([*override(BASE, extra), "--out", str(out)], capsys)
    assert code == 2
    assert message in stderr and stderr.count("\n") == 1
    assert not out.exists()


def test_unreadable_image_and_unwritable_path(tmp_path, capsys):
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    out = tmp_path / "rf.png"
    code, _, stderr = run_sepconv([*BASE, "--image", str(text), "--out", str(out)], capsys)
    assert code == 2 and "is not an image file PIL can read" in stderr and stderr.count("\n") == 1
    assert not out.exists()
    blocked = text / "rf.png"  # a file where a folder would have to be
    code, _, stderr = run_sepconv([*BASE, "--out", str(blocked)], capsys)
    assert (
        code == 2
        and f"--out {str(blocked)!r}: {str(text)!r} is not a folder" in stderr
        and stderr.count("\n") == 1
    )
    code, _, stderr = run_sepconv([*BASE, "--out", str(tmp_path / "rf.jpg")], capsys)
    assert code == 2 and "--out must end in .png or .svg" in stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["notes.txt"]


def test_a_checkpoint_is_drawn_on_its_training_data_with_its_weights(tmp_path, capsys):
    import torch

    from sepconv import load_model, save_model
    from sepconv.data import load_dataset
    from sepconv.models import create_model
    from sepconv.viz.fields import effective_receptive_field

    torch.manual_seed(3)
    model_file = save_model(
        create_model("standard_cnn", in_channels=3, num_classes=6), tmp_path / "model.safetensors"
    )
    (tmp_path / "config.json").write_text(json.dumps({"dataset": "synthetic", "seed": 0}))
    out = tmp_path / "rf.png"
    code, stdout, stderr = run_sepconv(
        ["rf", str(model_file), "--layer", "features.1", "--position", "4,20", "--out", str(out), "--json"],
        capsys,
    )
    assert code == 0, stderr
    document = json.loads(stdout)
    assert document["input"] == "synthetic test image 0 (the model's training data)"
    assert document["input_shape"] == [3, 32, 32]  # the data set's size, not standard_cnn's 28x28
    # two 3x3 convs: rows 2..6, columns 18..22
    assert document["theoretical_box"] == {"top": 2, "left": 18, "height": 5, "width": 5}
    reference = effective_receptive_field(
        load_model(model_file), "features.1", load_dataset("synthetic").test[0][0], position=(4, 20)
    )
    # Same weights, same image, same operations in this process: equal up to float rounding of the
    # JSON round trip (Python's repr of a float is exact, so this is tight).
    assert document["gradient_sum"] == pytest.approx(float(reference.gradient.sum()), rel=1e-6)
    assert document["effective_support_box"] == reference.support.to_dict()
