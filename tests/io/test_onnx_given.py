"""An ONNX file given where a sepconv model file is expected is named as such, with the command that takes it.

Issue 20: ``sepconv bench model.onnx`` said "not a sepconv model file ... header too large" (the
protobuf's first bytes read as a safetensors header length), which says nothing about what to do.
"""

from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper
from tests.helpers.cli import run_sepconv

from sepconv.io import CheckpointError, load_model


def _tiny_onnx(path) -> None:
    """A one-node ONNX model (Identity) as torch's exporter starts it: ir_version, then producer "pytorch"."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["images"], ["logits"])],
        "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3])],
    )
    onnx.save(helper.make_model(graph, producer_name="pytorch"), str(path))


def _message(path) -> str:
    return (
        f"{path} is an ONNX file (as sepconv export writes), not a sepconv model file: run it with 'sepconv "
        f"evaluate {path}' or sepconv.deploy.OnnxModel; commands that take a MODEL (summary, bench, convert, "
        f"compare, export, optimize) need the .safetensors model file it was exported from"
    )


@pytest.mark.parametrize("name", ["model.onnx", "renamed.safetensors"])
def test_load_model_names_an_onnx_file(tmp_path, name):
    # By its suffix, or (renamed) by its first bytes: the ir_version field, then the producer name.
    path = tmp_path / name
    _tiny_onnx(path)
    with pytest.raises(CheckpointError) as raised:
        load_model(path)
    assert str(raised.value) == _message(path)


@pytest.mark.parametrize(
    "command",
    [["summary"], ["bench", "--paths", "eager"], ["convert", "--out", "converted.safetensors"]],
    ids=["summary", "bench", "convert"],
)
def test_commands_taking_a_model_name_an_onnx_file_in_one_line(tmp_path, capsys, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    _tiny_onnx(tmp_path / "model.onnx")
    code, out, err = run_sepconv([command[0], "model.onnx", *command[1:]], capsys)
    assert (code, out) == (2, "")
    assert err == f"sepconv {command[0]}: error: {_message('model.onnx')}\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.onnx"]
