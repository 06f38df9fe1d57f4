"""``sepconv export --openvino DIR`` and ``sepconv evaluate DIR``: a verified IR, or one line and no folder.

The IR the command writes is run by OpenVINO directly and compared with the model it came from; with
a trained model, its int8 twin's accuracy is checked against the float IR's and the eager model's.
"""

from __future__ import annotations

import json
from contextlib import redirect_stderr, redirect_stdout
from io import StringIO

import pytest
import torch
from tests.helpers.cli import run_sepconv
from tests.helpers.trained import trained_separable_cnn

from sepconv import save_model
from sepconv.cli.main import main
from sepconv.deploy.metadata import ExportError
from sepconv.deploy.openvino_runtime import OpenVinoModel
from sepconv.models import create_model

pytest.importorskip("openvino")  # the `openvino` extra, which README's test command installs
pytest.importorskip("nncf")

# OpenVINO float32 against PyTorch float32 with BatchNorm folded: the export's own default tolerance.
ATOL, RTOL = 1e-4, 1e-3


def assert_one_line_error(code: int, out: str, err: str, *, command: str = "export", mentions: str) -> None:
    assert code == 2, err
    assert out == ""
    assert err.startswith(f"sepconv {command}: error: ") and err.endswith("\n")
    assert err.count("\n") == 1, err
    assert mentions in err


def test_openvino_export_of_a_model_file_reproduces_that_model(tmp_path, capsys):
    torch.manual_seed(0)
    model = create_model("standard_cnn").eval()
    save_model(model, tmp_path / "standard.safetensors")
    folder = tmp_path / "ir"
    code, out, err = run_sepconv(
        ["export", str(tmp_path / "standard.safetensors"), "--openvino", str(folder), "--json"], capsys
    )
    assert code == 0, err
    document = json.loads(out)
    assert "onnx" not in document  # no --onnx: no ONNX file is kept
    ir = document["openvino"]
    assert ir["path"] == str(folder / "model.xml")
    assert sorted(path.name for path in folder.iterdir()) == ["model.bin", "model.xml"]
    assert ir["max_abs_diff"] <= ATOL and ir["onnx"]["max_abs_diff"] <= ATOL
    assert ir["batch_sizes"] == [1, 7] and ir["inputs"] == "random normal"
    from sepconv.machine import cpu_has_native_bf16

    assert ("skipped" in ir["bf16"]) == (not cpu_has_native_bf16())
    loaded = OpenVinoModel(folder)
    assert loaded.metadata["spec"]["name"] == "standard_cnn"
    images = torch.randn(7, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        torch.testing.assert_close(loaded(images), model(images), atol=ATOL, rtol=RTOL)


def test_onnx_and_openvino_together_and_the_text_report(tmp_path, capsys):
    target, folder = tmp_path / "m.onnx", tmp_path / "ir"
    code, out, err = run_sepconv(
        ["export", "separable_cnn", "--onnx", str(target), "--openvino", str(folder)], capsys
    )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f"wrote {target} (")
    assert lines[2].startswith(f"wrote {folder / 'model.xml'} and its .bin (")
    assert lines[3].startswith("verified with OpenVINO on random normal at batch sizes 1, 7: max abs diff")
    assert target.is_file() and (folder / "model.xml").is_file()


@pytest.mark.parametrize(
    ("arguments", "mentions"),
    [
        ([], "give --onnx FILE, --openvino DIR or both"),
        (["--openvino", "{tmp}/missing/ir"], "its parent folder"),
        (["--openvino", "{tmp}/file.txt"], "exists and is not a folder"),
        (["--openvino", "{tmp}/ir", "--max-accuracy-drop", "1"], "got --max-accuracy-drop 1 without --int8"),
        (
            ["--onnx", "{tmp}/m.onnx", "--max-accuracy-drop", "1", "--int8", "--calibration", "mnist5k"],
            "without --openvino",
        ),
        (["--openvino", "{tmp}/ir", "--int8"], "--int8 needs --calibration DATASET"),
    ],
)
def test_refusals_are_one_line_and_write_nothing(arguments, mentions, tmp_path, capsys):
    (tmp_path / "file.txt").write_text("a file")
    args = [argument.replace("{tmp}", str(tmp_path)) for argument in arguments]
    code, out, err = run_sepconv(["export", "separable_cnn", *args], capsys)
    assert_one_line_error(code, out, err, mentions=mentions)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["file.txt"]


def test_without_openvino_installed_the_flag_names_the_install_command(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a)
    )
    code, out, err = run_sepconv(["export", "separable_cnn", "--openvino", str(tmp_path / "ir")], capsys)
    assert_one_line_error(
        code,
        out,
        err,
        mentions="--openvino cannot be used here: openvino not installed (pip install openvino nncf)",
    )
    assert list(tmp_path.iterdir()) == []


def test_a_model_openvino_cannot_convert_leaves_no_files(tmp_path, capsys, monkeypatch):
    # No model of ours trips OpenVINO's ONNX front end, so its refusal is planted where it would come.
    def refuse(*args, **kwargs):
        raise ExportError(
            "OpenVINO cannot read the ONNX export: operation Foo of domain bar is not supported"
        )

    monkeypatch.setattr("sepconv.deploy.openvino_export.ir_from_onnx", refuse)
    target, folder = tmp_path / "m.onnx", tmp_path / "ir"
    code, out, err = run_sepconv(
        ["export", "separable_cnn", "--onnx", str(target), "--openvino", str(folder)], capsys
    )
    assert_one_line_error(code, out, err, mentions="OpenVINO cannot read the ONNX export: operation Foo")
    assert list(tmp_path.iterdir()) == []  # neither the .onnx file, nor the folder, nor a scratch folder


@pytest.mark.parametrize(
    ("content", "mentions"),
    [
        (None, "OpenVINO IR file not found"),
        (b"<graph/>", "is not an OpenVINO IR: it has no <net version=...> element"),
    ],
)
def test_evaluate_refuses_a_missing_or_foreign_ir_in_one_line(content, mentions, tmp_path, capsys):
    xml = tmp_path / "model.xml"
    if content is not None:
        xml.write_bytes(content)
        xml.with_suffix(".bin").write_bytes(b"")
    code, out, err = run_sepconv(["evaluate", str(xml)], capsys)
    assert_one_line_error(code, out, err, command="evaluate", mentions=mentions)


def test_evaluate_refuses_an_ir_of_another_model(tmp_path, capsys):
    # a 3-channel model; mnist5k's images have one channel
    save_model(create_model("mobilenet_v2", num_classes=10, width_mult=0.25), tmp_path / "rgb.safetensors")
    folder = tmp_path / "ir"
    code, _, err = run_sepconv(
        ["export", str(tmp_path / "rgb.safetensors"), "--input-size", "3,32,32", "--openvino", str(folder)],
        capsys,
    )
    assert code == 0, err
    code, out, err = run_sepconv(["evaluate", str(folder), "--dataset", "mnist5k"], capsys)
    assert_one_line_error(code, out, err, command="evaluate", mentions=f"{folder / 'model.xml'} does not fit")


# --- with a trained model: int8 through NNCF, and evaluate -------------------------------------------


@pytest.fixture(scope="module")
def trained(request, tmp_path_factory):
    return trained_separable_cnn(request, tmp_path_factory)


def _export(arguments: list[str]) -> tuple[int, str, str]:
    out, err = StringIO(), StringIO()  # capsys is per test; a module fixture captures by itself
    with redirect_stdout(out), redirect_stderr(err):
        code = main(arguments)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def openvino_int8(trained, tmp_path_factory):
    """``sepconv export model.safetensors --openvino DIR --int8 --calibration mnist5k --json``, run once."""
    folder = tmp_path_factory.mktemp("cli-openvino") / "ir"
    arguments = ["export", str(trained.model_path), "--openvino", str(folder), "--int8"]
    code, out, err = _export([*arguments, "--calibration", "mnist5k", "--json"])
    return code, out, err, folder


@pytest.mark.xdist_group("trained_separable_cnn")  # one worker trains it, once
@pytest.mark.slow  # trains the demo model (~40 s on 2 idle cores), shared with the other export tests
def test_openvino_int8_keeps_top1_within_one_point(trained, openvino_int8):
    code, out, err, folder = openvino_int8
    assert code == 0, err
    assert err == ""  # no accuracy warning
    document = json.loads(out)
    ir = document["openvino"]
    assert ir["inputs"] == "given images" and ir["max_abs_diff"] <= ATOL
    int8 = ir["int8"]
    assert int8["path"] == str(folder / "model.int8.xml") and (folder / "model.int8.bin").is_file()
    assert int8["method"] == "quantize" and int8["calibration_images"] == 8 * 32
    assert int8["test_samples"] == 1000
    # The float IR and the eager model (what training measured) agree up to an image whose top two
    # logits tie within 1e-4: at most 1 of the 1000 test images.
    assert int8["fp32_accuracy"] == pytest.approx(trained.test_accuracy, abs=1 / 1000)
    assert int8["fp32_accuracy"] > 0.9
    # The target: int8 within one point of top-1, 10 of the 1000 test images.
    assert abs(int8["accuracy_drop_points"]) <= 1.0
    quantized = OpenVinoModel(folder / "model.int8.xml")
    assert quantized.metadata["precision"] == "int8"
    assert quantized.metadata["quantization"]["tool"] == "nncf"
    assert (quantized.mean, quantized.std) == ([0.1307], [0.3081])


@pytest.mark.xdist_group("trained_separable_cnn")  # one worker trains it, once
@pytest.mark.slow  # uses the trained model
def test_evaluate_runs_both_irs_through_openvino(trained, openvino_int8, tmp_path, capsys):
    _, out, _, folder = openvino_int8
    reported = json.loads(out)["openvino"]["int8"]
    for path, key in ((folder, "fp32_accuracy"), (folder / "model.int8.xml", "int8_accuracy")):
        code, out, err = run_sepconv(
            ["evaluate", str(path), "--json", "--confusion-png", str(tmp_path / f"{key}.png")], capsys
        )
        assert code == 0, err
        document = json.loads(out)
        assert document["num_samples"] == 1000
        # evaluate feeds the data set's images under the IR's stored normalization, export measured
        # on the same images: the same predictions, image for image
        assert document["accuracy"] == reported[key], key


@pytest.mark.xdist_group("trained_separable_cnn")  # one worker trains it, once
@pytest.mark.slow  # uses the trained model; NNCF evaluates the validation split several times
def test_accuracy_controlled_int8(trained, tmp_path):
    folder = tmp_path / "ir"
    code, out, err = _export(
        [
            "export",
            str(trained.model_path),
            "--openvino",
            str(folder),
            "--int8",
            "--calibration",
            "mnist5k",
            "--max-accuracy-drop",
            "0.5",
            "--json",
        ]
    )
    assert code == 0, err
    int8 = json.loads(out)["openvino"]["int8"]
    assert int8["method"] == "quantize_with_accuracy_control" and int8["max_accuracy_drop_points"] == 0.5
    quantization = OpenVinoModel(folder / "model.int8.xml").metadata["quantization"]
    assert quantization["method"] == "quantize_with_accuracy_control"
    # NNCF held the drop within 0.5 points on the validation split (500 images); the test split (1000
    # images) is another sample, whose drop may differ by a few images: within one point, as above.
    assert abs(int8["accuracy_drop_points"]) <= 1.0
