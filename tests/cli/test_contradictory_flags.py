"""Flags that contradict each other, or one that another makes meaningless, are refused in one line
before any work, naming both (issue 20). (train's --overwrite beside --resume: tests/cli/test_train.py;
demo's --progress beside --json: tests/cli/test_demo.py.)"""

from __future__ import annotations

from tests.helpers.cli import run_sepconv


def test_export_calibration_batches_without_int8_is_refused(tmp_path, capsys):
    target = tmp_path / "m.onnx"
    code, out, err = run_sepconv(
        ["export", "separable_cnn", "--onnx", str(target), "--calibration-batches", "4"], capsys
    )
    assert (code, out) == (2, "")
    assert err == (
        "sepconv export: error: --calibration-batches applies with --int8 only (it calibrates the int8 file), "
        "got --calibration-batches 4 without --int8\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_export_dataset_and_calibration_must_agree_before_anything_is_loaded(tmp_path, capsys):
    # Neither data set exists: the contradiction is named before either is looked up.
    code, out, err = run_sepconv(
        [
            "export",
            "separable_cnn",
            "--onnx",
            str(tmp_path / "m.onnx"),
            "--dataset",
            "no_such_a",
            "--calibration",
            "no_such_b",
        ],
        capsys,
    )
    assert (code, out) == (2, "")
    assert err == (
        "sepconv export: error: --dataset 'no_such_a' and --calibration 'no_such_b' must be the same data set\n"
    )
    assert list(tmp_path.iterdir()) == []
