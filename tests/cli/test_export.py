"""``sepconv export`` (and ``sepconv evaluate`` on its .onnx files): verified files, or one line and no file.

Files written by the command are checked with ONNX Runtime directly against the model they came
from; every refusal is exit code 2, one line on stderr, nothing on stdout and no .onnx file.
"""

from __future__ import annotations

import json
from contextlib import redirect_stderr, redirect_stdout
from io import StringIO

import numpy as np
import onnxruntime
import pytest
import torch
from tests.helpers.attacks import malicious_pickle
from tests.helpers.cli import run_sepconv
from tests.helpers.trained import trained_separable_cnn
from torch import nn

from sepconv import load_model, save_model
from sepconv.cli.main import main
from sepconv.deploy import OnnxModel
from sepconv.models import create_model

# float32 ONNX Runtime against float32 PyTorch: reassociated sums and the folded weights' extra
# rounding move logits of size ~1 by a few ulps (measured below 1e-6); 1e-4 is the command's own
# default --atol, and a wrong fold or op moves them by 1e-2 or more.
ROUND_TRIP_ATOL = 1e-4


def assert_one_line_error(code: int, out: str, err: str, *, mentions: str) -> None:
    assert code == 2, err
    assert out == ""
    assert err.startswith("sepconv export: error: ") and err.endswith("\n")
    assert err.count("\n") == 1, err
    assert mentions in err


def onnx_files(folder) -> list[str]:
    return sorted(path.name for path in folder.rglob("*.onnx"))


def run_onnxruntime(path, images: torch.Tensor) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: images.numpy()})[0]


# --- fp32 export ----------------------------------------------------------------------------------------


def test_export_json_is_one_document_with_a_verified_file(tmp_path, capsys):
    target = tmp_path / "model.onnx"
    code, out, err = run_sepconv(["export", "separable_cnn", "--onnx", str(target), "--json"], capsys)
    assert code == 0, err
    assert err == ""
    document = json.loads(out)  # the whole of stdout is one JSON document
    assert document["model"] == "separable_cnn"
    assert document["dataset"] is None  # a bare model name: no data set known, random images verify
    report = document["onnx"]
    assert report["path"] == str(target) and target.is_file()
    assert report["file_bytes"] == target.stat().st_size
    assert report["max_abs_diff"] <= ROUND_TRIP_ATOL
    assert report["batch_sizes"] == [1, 7]
    assert report["input_size"] == [1, 28, 28]
    assert report["inputs"] == "random normal"
    assert len(report["folded_batchnorms"]) == 11  # stem + 5 separable blocks x (depthwise, pointwise)
    assert OnnxModel(target).metadata["spec"] == {"name": "separable_cnn", "kwargs": {}}
    assert "int8" not in document


def test_export_of_a_model_file_reproduces_that_model(tmp_path, capsys):
    torch.manual_seed(4)
    model = create_model("standard_cnn")
    model_file = save_model(model, tmp_path / "standard.safetensors")
    target = tmp_path / "standard.onnx"
    code, out, err = run_sepconv(["export", str(model_file), "--onnx", str(target)], capsys)
    assert code == 0, err
    assert out.startswith(f"wrote {target} (")
    assert "verified with ONNX Runtime on random normal at batch sizes 1, 7: max abs diff" in out
    images = torch.randn(7, 1, 28, 28, generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        expected = load_model(model_file)(images).numpy()
    assert np.abs(run_onnxruntime(target, images) - expected).max() <= ROUND_TRIP_ATOL


# --- refusals: one line, exit 2, no file ---------------------------------------------------------------


def test_a_missing_model_file(tmp_path, capsys):
    code, out, err = run_sepconv(
        ["export", str(tmp_path / "missing.safetensors"), "--onnx", str(tmp_path / "m.onnx")], capsys
    )
    assert_one_line_error(code, out, err, mentions="checkpoint file not found")
    assert onnx_files(tmp_path) == []


def test_a_text_file_named_like_a_model(tmp_path, capsys):
    fake = tmp_path / "x.safetensors"
    fake.write_text("these are notes about a model, not a model\n")
    code, out, err = run_sepconv(["export", str(fake), "--onnx", str(tmp_path / "m.onnx")], capsys)
    assert_one_line_error(code, out, err, mentions=f"{fake} is not a sepconv model file")
    assert onnx_files(tmp_path) == []


def test_a_pickle_named_like_a_model_is_refused_without_running_it(tmp_path, capsys):
    marker = tmp_path / "pwned"
    fake = tmp_path / "model.safetensors"
    fake.write_bytes(malicious_pickle(marker))
    code, out, err = run_sepconv(["export", str(fake), "--onnx", str(tmp_path / "m.onnx")], capsys)
    assert_one_line_error(code, out, err, mentions="is not a sepconv model file")
    assert not marker.exists()
    assert onnx_files(tmp_path) == []


def test_a_model_file_whose_recipe_names_an_unknown_model(tmp_path, capsys):
    model_file = save_model(
        create_model("separable_cnn"),
        tmp_path / "renamed.safetensors",
        spec={"name": "no_such_model", "kwargs": {}},
    )
    code, out, err = run_sepconv(["export", str(model_file), "--onnx", str(tmp_path / "m.onnx")], capsys)
    assert_one_line_error(code, out, err, mentions="'no_such_model', which is not a registered model")
    assert onnx_files(tmp_path) == []


def test_an_unknown_model_name(tmp_path, capsys):
    code, out, err = run_sepconv(["export", "no_such_model", "--onnx", str(tmp_path / "m.onnx")], capsys)
    assert_one_line_error(code, out, err, mentions="unknown model name 'no_such_model'")
    assert onnx_files(tmp_path) == []


def test_onnx_must_name_an_onnx_file(tmp_path, capsys):
    code, out, err = run_sepconv(["export", "separable_cnn", "--onnx", str(tmp_path / "out.txt")], capsys)
    assert_one_line_error(
        code, out, err, mentions=f"--onnx must end in .onnx, got {str(tmp_path / 'out.txt')!r}"
    )
    assert list(tmp_path.iterdir()) == []


def test_onnx_in_a_missing_folder(tmp_path, capsys):
    target = tmp_path / "missing" / "m.onnx"
    code, out, err = run_sepconv(["export", "separable_cnn", "--onnx", str(target)], capsys)
    assert_one_line_error(code, out, err, mentions="does not exist")
    assert list(tmp_path.iterdir()) == []


def test_int8_without_a_data_set(tmp_path, capsys):
    code, out, err = run_sepconv(
        ["export", "separable_cnn", "--onnx", str(tmp_path / "m.onnx"), "--int8"], capsys
    )
    assert_one_line_error(code, out, err, mentions="--int8 needs --calibration DATASET")
    assert list(tmp_path.iterdir()) == []


def test_dataset_and_calibration_must_agree(tmp_path, capsys):
    code, out, err = run_sepconv(
        [
            "export",
            "separable_cnn",
            "--onnx",
            str(tmp_path / "m.onnx"),
            "--int8",
            "--dataset",
            "mnist5k",
            "--calibration",
            "synthetic",
        ],
        capsys,
    )
    assert_one_line_error(code, out, err, mentions="must be the same data set")
    assert list(tmp_path.iterdir()) == []


def test_input_size_must_match_the_data_set(tmp_path, capsys):
    code, out, err = run_sepconv(
        [
            "export",
            "separable_cnn",
            "--onnx",
            str(tmp_path / "m.onnx"),
            "--dataset",
            "mnist5k",
            "--input-size",
            "1,32,32",
        ],
        capsys,
    )
    assert_one_line_error(code, out, err, mentions="does not match data set mnist5k")
    assert list(tmp_path.iterdir()) == []


def test_a_negative_tolerance_is_refused_by_argparse(tmp_path, capsys):
    code, out, err = run_sepconv(
        ["export", "separable_cnn", "--onnx", str(tmp_path / "m.onnx"), "--atol", "-1"], capsys
    )
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "argument --atol: must be a finite number >= 0, got '-1'" in err
    assert list(tmp_path.iterdir()) == []


class DataDependentBranch(nn.Module):
    """No registered model fails to export, so the CLI is handed one (its model lookup replaced)."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.sum() > 0:
            return images.flatten(1)
        return images.flatten(1) - 1


def test_a_model_onnx_cannot_export(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("sepconv.cli.export.resolve_model", lambda spec: DataDependentBranch())
    code, out, err = run_sepconv(
        ["export", "branchy", "--onnx", str(tmp_path / "m.onnx"), "--input-size", "1,4,4"], capsys
    )
    assert code == 2 and out == ""
    # The error itself is one line, and the last; what torch prints before it is the xfail below.
    assert err.splitlines()[-1].startswith("sepconv export: error: ONNX cannot export DataDependentBranch")
    assert list(tmp_path.iterdir()) == []


def test_a_model_onnx_cannot_export_says_only_one_line_on_the_terminal(tmp_path, capfd, monkeypatch):
    monkeypatch.setattr("sepconv.cli.export.resolve_model", lambda spec: DataDependentBranch())
    code, out, err = run_sepconv(
        ["export", "branchy", "--onnx", str(tmp_path / "m.onnx"), "--input-size", "1,4,4"], capfd
    )
    assert_one_line_error(code, out, err, mentions="ONNX cannot export DataDependentBranch")


# --- with a trained model: int8 and evaluate ---------------------------------------------------------


@pytest.fixture(scope="module")
def trained(request, tmp_path_factory):
    return trained_separable_cnn(request, tmp_path_factory)


@pytest.fixture(scope="module")
def int8_export(trained, tmp_path_factory):
    """``sepconv export model.safetensors --onnx F --int8 --calibration mnist5k --json``, run once."""
    target = tmp_path_factory.mktemp("cli-int8") / "digits.onnx"
    out, err = StringIO(), StringIO()  # capsys is per test; a module fixture captures by itself
    with redirect_stdout(out), redirect_stderr(err):
        code = main(
            [
                "export",
                str(trained.model_path),
                "--onnx",
                str(target),
                "--int8",
                "--calibration",
                "mnist5k",
                "--json",
            ]
        )
    return code, out.getvalue(), err.getvalue(), target


@pytest.mark.xdist_group("trained_separable_cnn")  # one worker trains it, once
@pytest.mark.slow  # trains the demo model (~40 s on 2 idle cores), shared with tests/deploy/test_export.py
def test_export_int8_reports_both_accuracies(trained, int8_export):
    code, out, err, target = int8_export
    assert code == 0, err
    assert err == ""  # no accuracy warning: int8 lost at most one point
    document = json.loads(out)
    assert document["dataset"] == "mnist5k"
    assert document["onnx"]["inputs"] == "given images"  # verified on mnist5k test images
    assert document["onnx"]["max_abs_diff"] <= ROUND_TRIP_ATOL
    int8 = document["int8"]
    assert int8["path"] == str(target.with_suffix(".int8.onnx"))
    assert target.is_file() and target.with_suffix(".int8.onnx").is_file()
    assert int8["test_samples"] == 1000
    assert int8["calibration_batches"] == 8
    # fp32 ONNX and the eager model (what training measured) agree up to an image whose top two
    # logits tie within 1e-4: at most 1 of the 1000 test images.
    assert int8["fp32_accuracy"] == pytest.approx(trained.test_accuracy, abs=1 / 1000)
    assert int8["fp32_accuracy"] > 0.9
    # Issue 8: int8 keeps top-1 within one point, 10 of the 1000 test images.
    assert abs(int8["accuracy_drop_points"]) <= 1.0
    assert int8["accuracy_drop_points"] == pytest.approx(
        100 * (int8["fp32_accuracy"] - int8["int8_accuracy"])
    )
    assert OnnxModel(target.with_suffix(".int8.onnx")).metadata["precision"] == "int8"


@pytest.mark.xdist_group("trained_separable_cnn")  # one worker trains it, once
@pytest.mark.slow  # uses the trained model
def test_export_of_a_trained_model_takes_its_data_set_from_the_run(trained, tmp_path, capsys):
    target = tmp_path / "digits.onnx"
    code, out, err = run_sepconv(["export", str(trained.model_path), "--onnx", str(target), "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["dataset"] == "mnist5k"  # from config.json beside the model file
    stored = OnnxModel(target)
    assert (stored.mean, stored.std) == ([0.1307], [0.3081])
    assert stored.class_names == [str(digit) for digit in range(10)]


@pytest.mark.xdist_group("trained_separable_cnn")  # one worker trains it, once
@pytest.mark.slow  # uses the trained model
def test_evaluate_onnx_gives_the_accuracy_of_the_model_file(trained, int8_export, tmp_path, capsys):
    _, _, _, target = int8_export
    documents = {}
    for name, path in (("onnx", target), ("safetensors", trained.model_path)):
        code, out, err = run_sepconv(
            [
                "evaluate",
                str(path),
                "--dataset",
                "mnist5k",
                "--json",
                "--confusion-png",
                str(tmp_path / f"{name}.png"),
            ],
            capsys,
        )
        assert code == 0, err
        documents[name] = json.loads(out)
    onnx_document, eager_document = documents["onnx"], documents["safetensors"]
    assert onnx_document["num_samples"] == eager_document["num_samples"] == 1000
    # ONNX Runtime and PyTorch logits differ by ~1e-6: a prediction flips only where the top two
    # logits tie that closely, at most one image of 1000 here.
    assert onnx_document["accuracy"] == pytest.approx(eager_document["accuracy"], abs=1 / 1000)
    onnx_confusion = np.array(onnx_document["confusion_matrix"])
    eager_confusion = np.array(eager_document["confusion_matrix"])
    assert (onnx_confusion.sum(axis=1) == eager_confusion.sum(axis=1)).all()  # same labels per class
    assert np.abs(onnx_confusion - eager_confusion).sum() <= 2  # one flipped image moves two cells


def test_evaluate_refuses_a_file_that_is_not_onnx(tmp_path, capsys):
    fake = tmp_path / "model.onnx"
    fake.write_text("not a model\n")
    code, out, err = run_sepconv(["evaluate", str(fake), "--dataset", "synthetic"], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "is not an ONNX model ONNX Runtime can load" in err


# --- data sets and sizes that do not fit the model: refused before exporting (issue 20) ------------


def test_a_data_set_with_another_class_count_is_refused_before_exporting(tmp_path, capsys):
    # separable_cnn with 4 classes against mnist5k's 10: storing mnist5k's class names and
    # normalization would write a file that describes another model.
    model_file = save_model(create_model("separable_cnn", num_classes=4), tmp_path / "four.safetensors")
    target = tmp_path / "four.onnx"
    for flag in ("--dataset", "--calibration"):
        code, out, err = run_sepconv(
            ["export", str(model_file), "--onnx", str(target), flag, "mnist5k"], capsys
        )
        assert_one_line_error(code, out, err, mentions="")
        assert err == (
            f"sepconv export: error: {flag} mnist5k has 10 classes but {model_file} outputs 4; give the data set "
            f"the model was trained on, whose normalization and class names the file will carry\n"
        )
        assert onnx_files(tmp_path) == []


def test_a_data_set_with_other_channels_is_refused_before_exporting(tmp_path, capsys):
    target = tmp_path / "m.onnx"
    code, out, err = run_sepconv(
        ["export", "separable_cnn", "--onnx", str(target), "--dataset", "synthetic"], capsys
    )
    assert_one_line_error(code, out, err, mentions="")
    assert err == (
        "sepconv export: error: --dataset synthetic's image size (3, 32, 32) has 3 channels, but the model takes 1 "
        "(layer 'features.0.0'); the model was built for (1, 28, 28); give the data set the model was trained on\n"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("size", "message"),
    [
        (
            "3,28,28",
            "--input-size (3, 28, 28) has 3 channels, but the model takes 1 (layer 'features.0.0'); the model "
            "was built for (1, 28, 28)",
        ),
        (
            "1,1,1",
            "--input-size (1, 1, 1) does not fit the model: it fails at layer 'features.2' (MaxPool2d) (Given "
            "input size: (64x1x1). Calculated output size: (64x0x0). Output size is too small); the model was "
            "built for (1, 28, 28)",
        ),
    ],
    ids=["channels", "too-small"],
)
def test_an_input_size_the_model_cannot_take_is_named_before_exporting(
    tmp_path, capsys, monkeypatch, size, message
):
    import sepconv.deploy.onnx_export as onnx_export

    monkeypatch.setattr(onnx_export, "_export", lambda *args: pytest.fail("the exporter ran"))
    code, out, err = run_sepconv(
        ["export", "standard_cnn", "--onnx", str(tmp_path / "m.onnx"), "--input-size", size], capsys
    )
    assert_one_line_error(code, out, err, mentions="")
    assert err == f"sepconv export: error: {message}\n"
    assert list(tmp_path.iterdir()) == []
