"""LowRankLinear against the matrix product it stands for: x A^T B^T + b with its two weights."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from sepconv.errors import ArgumentTypeError, ParameterError
from sepconv.layers import LowRankLinear


def _reference(layer: LowRankLinear, x: torch.Tensor) -> torch.Tensor:
    """The layer's output from its weights by one matrix product in float64, independent of nn.Linear."""
    first = layer.first.weight.detach().double()  # (rank, in)
    second = layer.second.weight.detach().double()  # (out, rank)
    output = x.double() @ (second @ first).T
    if layer.second.bias is not None:
        output = output + layer.second.bias.detach().double()
    return output


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("leading", [(), (5,), (2, 3)], ids=["unbatched", "batch", "tokens"])
@pytest.mark.parametrize(("in_features", "out_features", "rank"), [(7, 5, 3), (4, 9, 6), (1, 1, 1)])
def test_matches_the_product_of_its_two_matrices(in_features, out_features, rank, leading, bias) -> None:
    torch.manual_seed(0)
    layer = LowRankLinear(in_features, out_features, rank, bias=bias)
    x = torch.randn(*leading, in_features)
    output = layer(x)
    assert output.shape == (*leading, out_features)
    torch.testing.assert_close(output.double(), _reference(layer, x), rtol=1e-5, atol=1e-6)
    # the same as two plain nn.Linear layers holding the weights
    first, second = nn.Linear(in_features, rank, bias=False), nn.Linear(rank, out_features, bias=bias)
    first.load_state_dict(layer.first.state_dict())
    second.load_state_dict(layer.second.state_dict())
    torch.testing.assert_close(output, second(first(x)))


def test_children_sizes_parameters_and_gradients() -> None:
    layer = LowRankLinear(32, 16, 4)
    assert isinstance(layer.first, nn.Linear) and isinstance(layer.second, nn.Linear)
    assert (layer.first.in_features, layer.first.out_features, layer.first.bias) == (32, 4, None)
    assert (layer.second.in_features, layer.second.out_features) == (4, 16)
    assert (layer.in_features, layer.out_features, layer.rank) == (32, 16, 4)
    assert sum(p.numel() for p in layer.parameters()) == 32 * 4 + 4 * 16 + 16
    layer(torch.randn(3, 32)).sum().backward()
    assert all(p.grad is not None for p in layer.parameters())


def test_device_and_dtype_reach_every_parameter() -> None:
    layer = LowRankLinear(6, 3, 2, device="cpu", dtype=torch.float64)
    assert {p.dtype for p in layer.parameters()} == {torch.float64}
    assert layer(torch.randn(2, 6, dtype=torch.float64)).dtype == torch.float64


def test_repr_config_and_reset() -> None:
    layer = LowRankLinear(8, 4, 2)
    assert layer.extra_repr() == "in_features=8, out_features=4, rank=2"
    assert (
        LowRankLinear(8, 4, 2, bias=False).extra_repr() == "in_features=8, out_features=4, rank=2, bias=False"
    )
    assert layer.get_config() == {"in_features": 8, "out_features": 4, "rank": 2, "bias": True}
    rebuilt = LowRankLinear(**layer.get_config())
    assert [p.shape for p in rebuilt.parameters()] == [p.shape for p in layer.parameters()]
    before = layer.first.weight.detach().clone()
    torch.manual_seed(1)
    layer.reset_parameters()
    assert not torch.equal(before, layer.first.weight)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            dict(in_features=0, out_features=4, rank=2),
            ParameterError,
            "in_features must be a positive integer, got 0",
        ),
        (
            dict(in_features=4, out_features=-1, rank=2),
            ParameterError,
            "out_features must be a positive integer",
        ),
        (
            dict(in_features=4, out_features=4, rank=0),
            ParameterError,
            "rank must be a positive integer, got 0",
        ),
        (dict(in_features=4, out_features=4, rank=2.0), ArgumentTypeError, "rank must be a positive integer"),
        (
            dict(in_features=4, out_features=4, rank=2, bias=None),
            ArgumentTypeError,
            "bias must be True or False",
        ),
    ],
)
def test_bad_arguments_name_the_parameter(kwargs, error, message) -> None:
    with pytest.raises(error, match=message):
        LowRankLinear(**kwargs)


def test_onnx_export_is_two_matrix_products_with_the_same_output(tmp_path) -> None:
    import onnx  # core dependencies (pyproject): their absence is a broken install, not a skip
    import onnxruntime

    torch.manual_seed(0)
    layer = LowRankLinear(12, 6, 3).eval()
    x = torch.randn(2, 12)
    path = tmp_path / "low_rank.onnx"
    with warnings.catch_warnings():  # the exporter's own deprecation notice
        warnings.simplefilter("ignore")
        torch.onnx.export(layer, (x,), str(path), input_names=["x"], output_names=["y"], dynamo=False)
    graph = onnx.load(str(path)).graph
    assert sorted(node.op_type for node in graph.node if node.op_type in ("Gemm", "MatMul")) in (
        ["Gemm", "Gemm"],
        ["Gemm", "MatMul"],
        ["MatMul", "MatMul"],
    )
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (output,) = session.run(None, {"x": x.numpy()})
    np.testing.assert_allclose(output, layer(x).detach().numpy(), rtol=1e-5, atol=1e-6)
