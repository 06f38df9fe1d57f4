"""The layers stay ordinary convolutions for PyTorch's tooling: FX tracing and ONNX export."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from sepconv.layers import Conv2d, SeparableConv2d


def _model() -> nn.Module:
    return nn.Sequential(
        SeparableConv2d(3, 8, 3, stride=2, padding="same"),
        nn.ReLU(),
        Conv2d(8, 4, 4, padding="same"),  # stride 1, even kernel: static asymmetric padding
        SeparableConv2d(4, 6, 3, padding="same", dilation=2),
    ).eval()


def test_fx_symbolic_trace_keeps_values():
    model = _model()
    traced = torch.fx.symbolic_trace(model)
    for size in (17, 20):  # the stride-2 'same' amount depends on the size; the graph recomputes it
        x = torch.randn(1, 3, size, size)
        torch.testing.assert_close(traced(x), model(x))


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::DeprecationWarning")
@pytest.mark.parametrize("dynamo", [False, True])
def test_onnx_export_runs_in_onnxruntime_with_same_values(tmp_path, dynamo):
    onnxruntime = pytest.importorskip("onnxruntime")
    model = _model()
    x = torch.randn(1, 3, 17, 17)
    path = tmp_path / "model.onnx"
    torch.onnx.export(model, (x,), str(path), dynamo=dynamo, input_names=["x"], output_names=["y"])
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(None, {"x": x.numpy()})
    np.testing.assert_allclose(onnx_out, model(x).detach().numpy(), rtol=1e-4, atol=1e-5)


def test_torch_compile_captures_one_graph_with_same_values():
    model = _model()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    x = torch.randn(2, 3, 17, 17)
    torch.testing.assert_close(compiled(x), model(x))
