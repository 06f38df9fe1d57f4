"""``sepconv train --init-from FILE``: a run from a model file, and each misuse as one line, exit code 2."""

from __future__ import annotations

import json

import pytest
import torch
from tests.helpers.cli import run_sepconv

from sepconv.io import read_model_metadata, save_model
from sepconv.models import create_model

TINY = [
    "--dataset",
    "synthetic",
    "--channels-last",
    "off",
    "--bf16",
    "off",
    "--fused",
    "off",
    "--no-tensorboard",
]


def _model_file(path, *, num_classes=6, in_channels=3, name="standard_cnn"):
    torch.manual_seed(0)
    model = create_model(name, widths=[4, 8, 8, 16], num_classes=num_classes, in_channels=in_channels)
    return save_model(model, path)


def test_a_run_from_a_checkpoint_state_path_takes_the_files_model_and_records_it(tmp_path, capsys):
    # A checkpoint's .state names the weights beside it (as MODEL arguments elsewhere do).
    file = _model_file(tmp_path / "step-00000004-0a1b2c3d4e5f.safetensors")
    state = file.with_suffix(".state")
    out = tmp_path / "run"
    code, stdout, stderr = run_sepconv(
        ["train", *TINY, "--init-from", str(state), "--max-steps", "1", "--out", str(out), "--json"], capsys
    )
    assert code == 0, stderr
    document = json.loads(stdout)
    assert document["model"] == "standard_cnn"  # the file's, though --model was left out
    assert document["init_from_sha256"] == read_model_metadata(file)["sha256"]
    config = json.loads((out / "config.json").read_text())
    assert (config["model"], config["init_from"], config["model_kwargs"]) == ("standard_cnn", str(state), {})
    assert read_model_metadata(out / "model.safetensors")["spec"] == read_model_metadata(file)["spec"]


def test_the_files_own_model_name_may_be_given(tmp_path, capsys):
    file = _model_file(tmp_path / "start.safetensors")
    arguments = ["--init-from", str(file), "--model", "standard_cnn", "--max-steps", "1"]
    code, _, stderr = run_sepconv(
        ["train", *TINY, *arguments, "--out", str(tmp_path / "run"), "--json"], capsys
    )
    assert code == 0, stderr


def _files(tmp_path):
    (tmp_path / "notes.safetensors").write_text("not a model")
    return {
        "standard": _model_file(tmp_path / "standard.safetensors"),
        "ten_classes": _model_file(tmp_path / "ten.safetensors", num_classes=10),
        "one_channel": _model_file(tmp_path / "gray.safetensors", in_channels=1),
        "text": tmp_path / "notes.safetensors",
        "missing": tmp_path / "missing.safetensors",
    }


@pytest.mark.parametrize(
    ("file", "arguments", "message"),
    [
        ("missing", [], "--init-from: model file not found: {missing}"),
        ("text", [], "--init-from: {text} is not a sepconv model file"),
        # separable_cnn is --model's default: given explicitly, it is still checked against the file.
        (
            "standard",
            ["--model", "separable_cnn"],
            "--model separable_cnn differs from the model in --init-from {standard} (standard_cnn)",
        ),
        (
            "standard",
            ["--model-arg", "widths=[4,8,8,16]"],
            "--model-arg must be empty with init_from",
        ),
        ("ten_classes", [], "gives (10,) outputs per image, but data set 'synthetic' has 6 classes"),
        ("one_channel", [], "does not accept the images of data set 'synthetic' (3 channel(s), 32x32)"),
    ],
)
def test_misuse_is_one_line_exit_code_2_and_claims_no_folder(tmp_path, capsys, file, arguments, message):
    files = _files(tmp_path)
    out = tmp_path / "run"
    command = ["train", *TINY, "--init-from", str(files[file]), *arguments, "--out", str(out), "--json"]
    code, stdout, stderr = run_sepconv(command, capsys)
    assert code == 2
    assert stdout == ""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sepconv train: error:"), stderr
    assert message.format(**files) in lines[0]
    assert not out.exists()


def test_resume_with_a_changed_init_file_is_refused(tmp_path, capsys):
    file = _model_file(tmp_path / "start.safetensors")
    out = tmp_path / "run"
    command = ["train", *TINY, "--init-from", str(file), "--max-steps", "1", "--out", str(out), "--json"]
    code, _, stderr = run_sepconv(command, capsys)
    assert code == 0, stderr
    before = read_model_metadata(file)["sha256"]
    torch.manual_seed(1)  # same architecture, other weights
    save_model(create_model("standard_cnn", widths=[4, 8, 8, 16], num_classes=6, in_channels=3), file)
    code, stdout, stderr = run_sepconv([*command, "--resume", str(out)], capsys)
    assert code == 2 and stdout == ""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1
    assert f"init_from {file} contents (sha256) {before} -> {read_model_metadata(file)['sha256']}" in lines[0]


def test_help_explains_init_from(capsys):
    code, stdout, _ = run_sepconv(["train", "--help"], capsys)
    assert code == 0
    assert "--init-from FILE" in stdout and "fine-tuning: --init-from FILE" in stdout
