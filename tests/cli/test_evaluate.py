"""``sepconv evaluate``: accuracy, per-class accuracy and confusion matrix agree with each other and the data."""

from __future__ import annotations

import json

import pytest

from sepconv.cli.main import main
from sepconv.data import load_dataset
from sepconv.train import TrainConfig, fit


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("run")
    config = TrainConfig(
        model="separable_cnn",
        model_kwargs={"widths": [4, 8, 8, 16]},
        dataset="synthetic",
        epochs=1,
        batch_size=64,
        lr=1e-2,
        out_dir=str(out_dir),
        progress_bar=False,
        tensorboard=False,
        channels_last="off",
        bf16="off",
    )
    return fit(config)


def test_evaluate_json_is_self_consistent(trained, tmp_path, capsys):
    png = tmp_path / "confusion.png"
    code = main(
        ["evaluate", str(trained.model_path), "--dataset", "synthetic", "--json", "--confusion-png", str(png)]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    document = json.loads(captured.out)
    confusion = document["confusion_matrix"]
    test_count = len(load_dataset("synthetic").test)
    assert sum(map(sum, confusion)) == document["num_samples"] == test_count
    diagonal = sum(confusion[index][index] for index in range(len(confusion)))
    assert document["accuracy"] == pytest.approx(diagonal / test_count)
    assert document["accuracy"] == pytest.approx(trained.test_accuracy)  # what training reported
    for index, name in enumerate(document["class_names"]):
        assert document["per_class_accuracy"][name] == pytest.approx(
            confusion[index][index] / sum(confusion[index])
        )
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_accepts_a_checkpoint_state_file(trained, tmp_path, capsys):
    png = tmp_path / "c.png"
    code = main(
        [
            "evaluate",
            str(trained.last_checkpoint),
            "--dataset",
            "synthetic",
            "--json",
            "--confusion-png",
            str(png),
        ]
    )
    assert code == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == pytest.approx(trained.test_accuracy)


def test_missing_checkpoint_is_one_line_and_exit_code_2(tmp_path, capsys):
    code = main(["evaluate", str(tmp_path / "missing.safetensors"), "--dataset", "synthetic"])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.count("\n") == 1 and "missing.safetensors" in captured.err
