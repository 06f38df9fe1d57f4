"""``sepconv summary``: every output format carries the same exact figures; errors are one line, exit 2."""

import csv
import io
import json

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
