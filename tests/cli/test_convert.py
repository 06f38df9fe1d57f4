"""``sepconv convert``: the written file is the library's conversion, it works with the other commands, and misuse is one line."""

from __future__ import annotations

import json

import pytest
import torch
from tests.helpers.cli import run_sepconv

from sepconv import load_model, save_model
from sepconv.analysis import summarize
from sepconv.convert import to_separable
from sepconv.io import model_transforms
from sepconv.models import create_model

WIDTHS = [4, 8, 8, 16]


@pytest.fixture
def source(tmp_path):
    torch.manual_seed(0)
    return save_model(create_model("standard_cnn", widths=WIDTHS), tmp_path / "standard.safetensors")


def test_written_file_is_the_library_conversion_and_the_json_its_report(tmp_path, capsys, source):
    out = tmp_path / "separable.safetensors"
    code, stdout, stderr = run_sepconv(
        [
            "convert",
            str(source),
            "--depth-multiplier",
            "2",
            "--exclude",
            "features.0.*",
            "--out",
            str(out),
            "--json",
        ],
        capsys,
    )
    assert code == 0, stderr
    document = json.loads(stdout)
    expected_model, expected = to_separable(
        load_model(source), depth_multiplier=2, exclude="features.0.*", calibration=None
    )
    loaded = load_model(out)
    x = torch.randn(3, 1, 28, 28)
    assert torch.equal(loaded(x), expected_model.eval()(x))
    assert model_transforms(loaded) == model_transforms(expected_model)
    assert [row["name"] for row in document["layers"]] == [layer.name for layer in expected.layers]
    assert [row["weight_error"] for row in document["layers"]] == [
        layer.weight_error for layer in expected.layers
    ]
    summary = summarize(loaded, (1, 1, 28, 28))
    assert document["totals"]["params_after"] == summary.total_params
    assert document["totals"]["macs_after"] == summary.total_macs
    assert document["skipped"] == [{"name": "features.0.0", "reason": "excluded by 'features.0.*'"}]
    # No run folder beside the source: random normal calibration images, and their output errors.
    assert document["calibration"] == "32 random normal images"
    assert all(0 < row["output_error"] < 2 for row in document["layers"])


def test_auto_by_output_error_is_the_library_choice_on_the_same_calibration_images(tmp_path, capsys, source):
    out = tmp_path / "auto.safetensors"
    arguments = ["--depth-multiplier", "auto", "--max-output-error", "0.3", "--out", str(out), "--json"]
    code, stdout, stderr = run_sepconv(["convert", str(source), *arguments], capsys)
    assert code == 0, stderr
    document = json.loads(stdout)
    # the command's calibration images for a model without a run folder: 32 normal ones, seed 0
    images = torch.randn(32, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with pytest.warns(UserWarning):  # the stem, left as it was
        _, expected = to_separable(
            load_model(source), depth_multiplier="auto", max_output_error=0.3, calibration=images
        )
    assert [(row["name"], row["depth_multiplier"]) for row in document["layers"]] == [
        (layer.name, layer.depth_multiplier) for layer in expected.layers
    ]
    assert all(row["output_error"] <= 0.3 for row in document["layers"])
    assert "--max-output-error" in stderr and "max_output_error" not in stderr  # the warning names the flag
    assert "measures the layers on 32 random normal images" in stderr  # no data set known for the model


def test_text_report_and_calibration_none(tmp_path, capsys, source):
    out = tmp_path / "converted.safetensors"
    code, stdout, stderr = run_sepconv(
        ["convert", str(source), "--calibration", "none", "--out", str(out)], capsys
    )
    assert code == 0, stderr
    assert "features.7.0" in stdout and "total params:" in stdout and f"wrote {out}" in stdout
    assert "output errors on" not in stdout
    assert f"sepconv train --init-from {out}" in stdout


@pytest.mark.slow
def test_converted_file_works_with_summary_export_and_train(tmp_path, capsys, source):
    out = tmp_path / "converted.safetensors"
    assert run_sepconv(["convert", str(source), "--depth-multiplier", "3", "--out", str(out)], capsys)[0] == 0
    code, stdout, _ = run_sepconv(["summary", str(out), "--json"], capsys)
    assert code == 0
    assert json.loads(stdout)["total_macs"] == summarize(load_model(out), (1, 1, 28, 28)).total_macs
    # export verifies the ONNX file against PyTorch with ONNX Runtime and fails on any mismatch.
    code, _, stderr = run_sepconv(["export", str(out), "--onnx", str(tmp_path / "m.onnx")], capsys)
    assert code == 0, stderr
    train = ["train", "--init-from", str(out), "--dataset", "mnist5k", "--max-steps", "1", "--no-tensorboard"]
    code, stdout, stderr = run_sepconv(
        [*train, "--fused", "off", "--out", str(tmp_path / "run"), "--json"], capsys
    )
    assert code == 0, stderr
    trained = load_model(tmp_path / "run" / "model.safetensors")
    assert model_transforms(trained) == model_transforms(load_model(out))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            ["--depth-multiplier", "0"],
            "argument --depth-multiplier: must be a positive integer or 'auto', got '0'",
        ),
        (["--depth-multiplier", "auto"], "--depth-multiplier auto needs --max-error E"),
        (["--max-error", "0.1"], "--max-error applies with --depth-multiplier auto only"),
        (["--max-output-error", "0.1"], "--max-output-error applies with --depth-multiplier auto only"),
        (
            ["--depth-multiplier", "auto", "--max-output-error", "0.1", "--calibration", "none"],
            "--max-output-error measures each layer on calibration images: give --calibration auto",
        ),
        (
            ["--max-output-error", "-1", "--depth-multiplier", "auto"],
            "argument --max-output-error: must be a finite number in [0, 1]",
        ),
        (
            ["--max-error", "2", "--depth-multiplier", "auto"],
            "argument --max-error: must be a finite number in [0, 1]",
        ),
        (["--exclude", "features.*"], "has no convolution to convert: its 6 nn.Conv2d layers"),
    ],
)
def test_bad_options_are_one_line_and_exit_2_with_no_file(tmp_path, capsys, source, arguments, message):
    out = tmp_path / "converted.safetensors"
    code, stdout, stderr = run_sepconv(["convert", str(source), *arguments, "--out", str(out)], capsys)
    assert code == 2 and stdout == ""
    assert len(stderr.strip().splitlines()) == 1 and message in stderr
    assert not out.exists()


def test_model_with_no_eligible_convolution(tmp_path, capsys):
    # Every convolution of separable_cnn after its stem is depthwise or pointwise; leave the stem out.
    out = tmp_path / "x.safetensors"
    code, _, stderr = run_sepconv(
        ["convert", "separable_cnn", "--exclude", "features.0.0", "--out", str(out)], capsys
    )
    assert code == 2 and "sepconv convert: error: SmallCNN has no convolution to convert" in stderr
    assert "already depthwise" in stderr and not out.exists()


def test_unknown_checkpoint_and_bad_out(tmp_path, capsys):
    code, _, stderr = run_sepconv(
        ["convert", str(tmp_path / "gone.safetensors"), "--out", str(tmp_path / "x.safetensors")], capsys
    )
    assert code == 2 and f"checkpoint file not found: {tmp_path / 'gone.safetensors'}" in stderr
    code, _, stderr = run_sepconv(["convert", "standard_cnn", "--out", str(tmp_path / "x.pt")], capsys)
    assert code == 2 and "--out must end in .safetensors, got" in stderr
    code, _, stderr = run_sepconv(
        ["convert", "no_such_model", "--out", str(tmp_path / "x.safetensors")], capsys
    )
    assert code == 2 and "unknown model name 'no_such_model'" in stderr


def test_patterns_matching_nothing_are_warned_on_stderr(tmp_path, capsys, source):
    out = tmp_path / "converted.safetensors"
    code, stdout, stderr = run_sepconv(
        ["convert", str(source), "--exclude", "head.*", "--calibration", "none", "--out", str(out), "--json"],
        capsys,
    )
    assert code == 0 and out.is_file()
    assert stderr.strip() == "sepconv convert: warning: exclude pattern 'head.*' matches no layer of SmallCNN"
    assert json.loads(stdout)["warnings"] == ["exclude pattern 'head.*' matches no layer of SmallCNN"]


def test_compare_a_model_with_its_full_rank_conversion(tmp_path, capsys, source):
    out = tmp_path / "exact.safetensors"
    arguments = [
        "convert",
        str(source),
        "--depth-multiplier",
        "9",
        "--calibration",
        "none",
        "--out",
        str(out),
    ]
    assert run_sepconv(arguments, capsys)[0] == 0
    code, stdout, stderr = run_sepconv(["compare", str(source), str(out), "--repeats", "1", "--json"], capsys)
    assert code == 0, stderr
    document = json.loads(stdout)
    agreement = document["agreement"]
    # Full rank is the same function; float32 rounding through five converted layers stays ~1e-6.
    assert agreement["relative_error"] < 1e-4 and agreement["top1_agreement"] == 1.0
    assert document["b"]["macs"] == summarize(load_model(out), (1, 1, 28, 28)).total_macs
    assert document["mac_ratio"] == document["a"]["macs"] / document["b"]["macs"]


def test_recalibrate_bn_uses_training_images_of_the_named_data_set(tmp_path, capsys, source):
    out = tmp_path / "recalibrated.safetensors"
    arguments = [
        "convert",
        str(source),
        "--calibration",
        "mnist5k",
        "--recalibrate-bn",
        "40",
        "--out",
        str(out),
    ]
    code, stdout, stderr = run_sepconv([*arguments, "--json"], capsys)
    assert code == 0, stderr
    assert json.loads(stdout)["batchnorm_recalibrated_on"] == "40 mnist5k training images"
    from sepconv.convert import recalibrate_batchnorm
    from sepconv.data import load_dataset

    data = load_dataset("mnist5k", seed=0)
    expected, _ = to_separable(load_model(source))
    recalibrate_batchnorm(expected, torch.stack([data.train[index][0] for index in range(40)]))
    loaded = load_model(out)
    for key, value in expected.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    code, _, stderr = run_sepconv(
        ["convert", "standard_cnn", "--recalibrate-bn", "8", "--out", str(out)], capsys
    )
    assert code == 2 and "--recalibrate-bn needs training images" in stderr
