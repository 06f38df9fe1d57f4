"""The engine registry: names, what each engine runs (against the module's own output), the ONNX
operators a layer timed alone runs, the deployable files, and an engine that cannot run here."""

from __future__ import annotations

import importlib.util

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from sepconv import load_model
from sepconv.convert.separable import separable_like
from sepconv.deploy import ENGINES, OnnxModel, PathUnavailableError, get_engine
from sepconv.deploy.engines import OnnxRuntimeEngine
from sepconv.deploy.onnx_export import export_layers
from sepconv.errors import ParameterError
from sepconv.models import create_model


def test_the_registry_names_six_engines_and_an_unknown_name_lists_them() -> None:
    assert list(ENGINES) == ["ort", "ort-int8", "torch", "openvino", "openvino-bf16", "openvino-int8"]
    assert [ENGINES[name].precision for name in ENGINES] == ["fp32", "int8", "fp32", "fp32", "bf16", "int8"]
    assert [ENGINES[name].bytes_per_element for name in ENGINES] == [4, 1, 4, 4, 2, 1]
    assert get_engine("ort-int8") is ENGINES["ort-int8"]
    with pytest.raises(
        ParameterError,
        match=r"engine must be one of ort, ort-int8, torch, openvino, openvino-bf16, openvino-int8; got 'onnx'",
    ) as caught:
        get_engine("onnx")
    assert caught.value.param == "engine"
    description = get_engine("torch").describe()
    assert description["version"] == torch.__version__ and description["precision"] == "fp32"


@pytest.mark.parametrize("name", ["ort", "torch"])
def test_a_prepared_call_computes_the_module_on_the_bound_example(name: str, tmp_path) -> None:
    conv = nn.Conv2d(4, 6, 3, padding=1)
    separable = separable_like(conv, 2, None)
    example = torch.randn(2, 4, 8, 8)
    before = torch.get_num_threads()
    calls = get_engine(name).prepare_many([conv, separable], [example, example], tmp_path, threads=1)
    with torch.no_grad():
        for module, call in zip([conv, separable], calls, strict=True):
            np.testing.assert_allclose(np.asarray(call()), module(example).numpy(), rtol=1e-4, atol=1e-5)
    assert torch.get_num_threads() == before  # the torch engine restores the thread count after each call
    assert conv.training and separable.training  # the caller's modules are left as they were


def test_the_torch_engine_runs_with_the_threads_asked_for(monkeypatch, tmp_path) -> None:
    seen = []
    linear = nn.Linear(3, 2)
    call = get_engine("torch").prepare(linear, torch.randn(1, 3), tmp_path, threads=1)
    monkeypatch.setattr(torch.nn.Linear, "forward", lambda self, x: seen.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        call()
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_a_layer_alone_holds_the_operators_the_whole_model_export_gives_it() -> None:
    conv = nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False)
    modules = [conv, separable_like(conv, 4, None), nn.Linear(32, 8), nn.Linear(32, 8, bias=False)]
    examples = [torch.randn(1, 8, 8, 8), torch.randn(1, 8, 8, 8), torch.randn(1, 32), torch.randn(1, 32)]
    graphs = export_layers([module.eval() for module in modules], examples)
    assert [[node.op_type for node in graph.graph.node] for graph in graphs] == [
        ["Conv"],
        ["Conv", "Conv"],  # depthwise (group = C_in) and pointwise
        ["Gemm"],
        ["Gemm"],
    ]
    depthwise = graphs[1].graph.node[0]
    assert {a.name: onnx.helper.get_attribute_value(a) for a in depthwise.attribute}["group"] == 8
    assert [len(graph.graph.input) for graph in graphs] == [1, 1, 1, 1]


def test_int8_times_a_quantized_copy_of_the_layer(tmp_path) -> None:
    conv = nn.Conv2d(8, 8, 3, padding=1)
    example = torch.randn(1, 8, 6, 6)
    call = get_engine("ort-int8").prepare(conv, example, tmp_path, threads=1)
    quantized = onnx.load(str(tmp_path / "layer-0-int8.onnx"))
    operators = {node.op_type for node in quantized.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= operators
    output = np.asarray(call())
    with torch.no_grad():
        expected = conv(example).numpy()
    assert output.shape == expected.shape
    # int8, its scales calibrated on other random batches (outliers clip): the same map, coarsely
    assert np.corrcoef(output.ravel(), expected.ravel())[0, 1] > 0.95


def test_deploy_writes_each_engines_file(tmp_path) -> None:
    model = create_model("standard_cnn")
    size = (1, 28, 28)
    fp32 = get_engine("ort").deploy(model, size, tmp_path / "ort")
    assert fp32.name == "model.onnx" and OnnxModel(fp32).input_size == size
    int8 = get_engine("ort-int8").deploy(model, size, tmp_path / "int8", calibration=[torch.randn(4, *size)])
    assert int8.name == "model.int8.onnx" and OnnxModel(int8).metadata["precision"] == "int8"
    saved = get_engine("torch").deploy(model, size, tmp_path / "torch")
    restored = load_model(saved)
    images = torch.randn(2, *size)
    with torch.no_grad():
        torch.testing.assert_close(restored.eval()(images), model.eval()(images))


def test_an_engine_without_its_packages_says_which_are_missing(monkeypatch, tmp_path) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *args: None if name == "onnxruntime" else real(name, *args)
    )
    engine = OnnxRuntimeEngine(int8=False)
    assert (
        engine.unavailable_reason() == "onnxruntime not installed (pip install onnx onnxruntime onnxscript)"
    )
    with pytest.raises(PathUnavailableError, match="engine ort cannot run here: onnxruntime not installed"):
        engine.prepare(nn.Conv2d(1, 1, 3), torch.randn(1, 1, 4, 4), tmp_path, threads=1)
    assert get_engine("torch").unavailable_reason() is None
