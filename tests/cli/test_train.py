"""``sepconv train``: a JSON run end to end, and bad input as one line with exit code 2."""

from __future__ import annotations

import csv
import json

import pytest

from sepconv.cli.main import main

TINY = [
    "--dataset",
    "synthetic",
    "--model-arg",
    "widths=[4,8,8,16]",
    "--channels-last",
    "off",
    "--bf16",
    "off",
    "--no-tensorboard",
]


def test_train_json_prints_one_document_matching_the_csv(tmp_path, capsys):
    code = main(["train", *TINY, "--epochs", "2", "--batch-size", "64", "--out", str(tmp_path), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    document = json.loads(captured.out)  # the whole of stdout is one JSON document
    assert [row["epoch"] for row in document["history"]] == [1, 2]
    with open(tmp_path / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [float(row["train_loss"]) for row in rows] == pytest.approx(
        [row["train_loss"] for row in document["history"]]
    )
    assert 0 <= document["test_accuracy"] <= 1
    assert (tmp_path / "model.safetensors").is_file()
    assert json.loads((tmp_path / "config.json").read_text())["model_kwargs"] == {"widths": [4, 8, 8, 16]}


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--epochs", "0"], "epochs must be a positive integer"),
        (["--model", "no_such_model"], "unknown model name 'no_such_model'"),
        (["--batch-size", "33", "--devices", "2"], "divisible"),
        (["--model-arg", "widths"], "--model-arg must be KEY=VALUE"),
        (["--resume", "/nonexistent/run"], "no such checkpoint or folder"),
        (["--dataset", "no_such_set"], "no_such_set"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys, arguments, message):
    code = main(["train", *TINY, "--out", str(tmp_path), "--json", *arguments])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sepconv train: error:"), captured.err
    assert message in lines[0]


def test_empty_image_folder_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "images" / "cats").mkdir(parents=True)
    code = main(
        ["train", "--dataset", f"imagefolder:{tmp_path / 'images'}", "--out", str(tmp_path / "run"), "--json"]
    )
    captured = capsys.readouterr()
    assert code == 2
    assert len(captured.err.strip().splitlines()) == 1


def test_help_documents_multi_node_use(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    assert "torchrun" in text and "--num-nodes" in text
