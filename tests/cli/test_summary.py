"""``sepconv summary``: every output format carries the same exact figures; errors are one line, exit 2."""

import csv
import io
import json

import pytest
import torch
from tests.helpers.cli import run_sepconv
from torch.utils.flop_counter import FlopCounterMode

from sepconv.analysis import summarize
from sepconv.cli.main import main
from sepconv.models import create_model

MODEL_ARGS = ["summary", "mobilenet_v1", "--input-size", "1,3,64,64"]


def expected():
    return summarize(create_model("mobilenet_v1"), (1, 3, 64, 64))


def test_json_has_exact_totals(capsys):
    assert main([*MODEL_ARGS, "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    reference = expected()
    assert document["total_params"] == reference.total_params == 4_231_976
    # 64x64 is (64/224)^2 of the 224 cost for every conv except where sizes round; check against ours
    assert document["total_macs"] == reference.total_macs
    assert document["total_flops"] == 2 * reference.total_macs
    assert document["receptive_field"] == [315, 315]
    assert sum(layer["macs"] for layer in document["layers"]) == document["total_macs"]


def test_table_markdown_and_csv(capsys):
    assert main(MODEL_ARGS) == 0
    table = capsys.readouterr().out
    assert "features.13.pointwise.0" in table and "4,231,976" in table and "whole input" in table
    assert main([*MODEL_ARGS, "--markdown"]) == 0
    markdown = capsys.readouterr().out
    assert "| Layer | Type |" in markdown and "| `classifier.1` | Linear |" in markdown
    assert main([*MODEL_ARGS, "--csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert sum(int(row["macs"]) for row in rows) == expected().total_macs
    assert sum(int(row["params"]) for row in rows) == 4_231_976


def test_depth_folds(capsys):
    assert main([*MODEL_ARGS, "--depth", "1", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert [layer["name"] for layer in document["layers"]] == ["features", "pool", "classifier"]
    assert document["layers"][0]["receptive_field"] == [315, 315]


def test_short_input_size_means_one_rgb_image(capsys):
    assert main(["summary", "torchvision:resnet18", "--input-size", "32", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["input_shapes"] == [[1, 3, 32, 32]]


def test_failing_input_names_the_layer(capsys):
    assert main(["summary", "torchvision:alexnet", "--input-size", "1,3,20,20"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert "layer 'features.5' (MaxPool2d) failed on input (1, 192, 1, 1)" in error


def test_unknown_model_lists_close_matches(capsys):
    assert main(["summary", "mobilenet_v3"]) == 2
    error = capsys.readouterr().err
    assert "unknown model name 'mobilenet_v3'" in error and "mobilenet_v2" in error


def standard_cnn_macs_by_hand(side: int) -> int:
    """standard_cnn: 3x3 'same' convs (out x in x 9 per pixel), 2x2 max pools after stages 1 and 2."""
    convs = [(side, 1, 32), (side, 32, 64), (side // 2, 64, 64), (side // 2, 64, 128)]
    convs += [(side // 4, 128, 128), (side // 4, 128, 256)]
    return sum(size * size * out * inp * 9 for size, inp, out in convs) + 256 * 10


def test_model_default_input_is_its_own(capsys):
    # standard_cnn takes 1x28x28 (MNIST), not the 3x224x224 of ImageNet models
    assert main(["summary", "standard_cnn", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["input_shapes"] == [[1, 1, 28, 28]]
    assert document["total_params"] == 575_594  # by hand in tests/models/test_registry_and_twins.py
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        create_model("standard_cnn").eval()(torch.zeros(1, 1, 28, 28))
    assert document["total_macs"] == standard_cnn_macs_by_hand(28) == counter.get_total_flops() // 2
    assert document["total_macs"] == 58_031_104


def test_short_input_size_takes_the_model_channels(capsys):
    assert main(["summary", "standard_cnn", "--input-size", "32", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["input_shapes"] == [[1, 1, 32, 32]]
    assert document["total_macs"] == standard_cnn_macs_by_hand(32)


def test_checkpoint_default_input_follows_its_recipe(tmp_path, capsys):
    from sepconv import save_model

    path = save_model(create_model("separable_cnn", in_channels=3, widths=(4, 8, 8, 8)), tmp_path / "rgb")
    assert main(["summary", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["input_shapes"] == [[1, 3, 28, 28]]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("1,1,1,1,28,28", "argument --input-size: must be C,H,W or N,C,H,W of positive integers"),
        ("0,28", "argument --input-size: must be C,H,W or N,C,H,W of positive integers"),
        ("1,3,100000,100000", "--input-size '1,3,100000,100000' has 30,000,000,000 elements"),
    ],
)
def test_bad_input_size_is_one_line_naming_the_flag(capsys, value, message):
    code, _, error = run_sepconv(["summary", "standard_cnn", "--input-size", value], capsys)
    assert code == 2
    assert error.count("\n") == 1 and message in error


def test_lost_receptive_field_is_null_in_json(capsys):
    # ConvNeXt's LayerNorm2d permutes to channels-last: no rule follows that, so the field is unknown
    assert main(["summary", "torchvision:convnext_tiny", "--input-size", "32", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["receptive_field"] is None and document["effective_stride"] is None
    assert document["receptive_field_lost_at"] == "aten.permute in 'features.0.1'"
    assert main(["summary", "torchvision:convnext_tiny", "--input-size", "32"]) == 0
    assert (
        "Receptive field: unknown (tracking lost at aten.permute in 'features.0.1')"
        in capsys.readouterr().out
    )
