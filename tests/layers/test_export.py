"""The layers stay ordinary convolutions for PyTorch's tooling: FX, torch.compile, torch.export, ONNX.

'same' padding at stride > 1 depends on the input size; these tests check that every capture
mechanism keeps that dependence (an exported graph with dynamic height and width pads correctly at
sizes other than the example's) rather than freezing the example's amounts as constants.
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.export import Dim

from sepconv.arithmetic import same_padding
from sepconv.layers import Conv2d, SeparableConv2d
from sepconv.layers.padding import _same_amounts
from sepconv.models import create_model

# Two spatial sizes the exported graphs never saw, one odd and non-square (the pad splits differ).
SIZES = [(33, 47), (64, 64)]
# Dynamic spatial axes of _model(): from 16 pixels on, no feature map is 1 pixel wide (torch.export
# specializes sizes 0 and 1, so a range that reaches them cannot stay symbolic).
SPATIAL_DIMS = {2: Dim("height", min=16, max=1024), 3: Dim("width", min=16, max=1024)}


def _ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


def _model() -> nn.Module:
    return nn.Sequential(
        SeparableConv2d(3, 8, 3, stride=2, padding="same"),
        nn.ReLU(),
        Conv2d(8, 4, 4, padding="same"),  # stride 1, even kernel: static asymmetric padding
        SeparableConv2d(4, 6, 3, padding="same", dilation=2),
        Conv2d(6, 5, (3, 2), stride=(4, 3), padding="same", padding_mode="replicate"),  # kernel < stride
    ).eval()


def test_same_amounts_match_arithmetic_for_ints_and_shape_tensors():
    # arithmetic.same_padding (the direct TF formula) is the reference; pad_same's rewritten form must
    # agree for every size, also when the size is a 0-dim tensor as torch.jit.trace hands it over.
    for size, kernel, stride, dilation in itertools.product(
        range(1, 30), range(1, 6), range(1, 5), (1, 2, 3)
    ):
        expected = same_padding(size, kernel, stride, dilation)
        assert _same_amounts(size, kernel, stride, dilation) == expected
        traced = _same_amounts(torch.tensor(size), kernel, stride, dilation)
        assert tuple(int(amount) for amount in traced) == expected, (size, kernel, stride, dilation)


def test_one_pixel_kernel_at_stride_two_needs_no_padding_at_run_time():
    # TF 'same' never pads a 1x1 kernel, so the layer is planned as a plain convolution.
    layer = Conv2d(3, 4, 1, stride=2, padding="same")
    assert not layer._dynamic_same and layer.padding == (0, 0) and layer._explicit_pad is None


def test_fx_symbolic_trace_keeps_values():
    model = _model()
    traced = torch.fx.symbolic_trace(model)
    for size in (17, 20):  # the stride-2 'same' amount depends on the size; the graph recomputes it
        x = torch.randn(1, 3, size, size)
        # The traced graph calls the same functions on the same tensors (bit-identical in practice); the
        # default float32 tolerances (rtol 1.3e-6, atol 1e-5) only allow a reordered sum, while a wrong
        # pad amount shifts whole rows of O(1) outputs.
        torch.testing.assert_close(traced(x), model(x))


def _onnx_session(model: nn.Module, path, dynamo: bool):
    import onnxruntime  # a core dependency (pyproject): its absence is a broken install, not a skip

    example = torch.randn(2, 3, 20, 21)
    if dynamo:
        axes = {"dynamic_shapes": ({0: Dim("batch", max=64), **SPATIAL_DIMS},)}
    else:
        axes = {"dynamic_axes": {"x": {0: "batch", 2: "height", 3: "width"}, "y": {0: "batch"}}}
    with warnings.catch_warnings():  # the exporters' own deprecation and tracer notices
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (example,), str(path), dynamo=dynamo, input_names=["x"], output_names=["y"], **axes
        )
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize(
    "dynamo", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["torchscript", "dynamo"]
)
def test_onnx_export_with_dynamic_height_and_width_matches_eager_at_other_sizes(tmp_path, dynamo):
    model = _model()
    session = _onnx_session(model, tmp_path / "model.onnx", dynamo)
    for height, width in SIZES:
        x = torch.randn(1, 3, height, width)
        (onnx_out,) = session.run(None, {"x": x.numpy()})
        with torch.no_grad():
            expected = model(x).numpy()
        # Shape: ceil(size / 2) after the stride-2 layer, then ceil(. / 4) and ceil(. / 3); this is what
        # went wrong before (the pad amounts of the 20x21 example were baked in).
        assert onnx_out.shape == (1, 5, _ceil_div(_ceil_div(height, 2), 4), _ceil_div(_ceil_div(width, 2), 3))
        assert expected.shape == onnx_out.shape
        # float32: each output sums at most 8*3*3 products of O(1) values over four layers, and ONNX
        # Runtime may sum in another order: a few float32 ulps (1.2e-7) per term, well under 1e-5.
        np.testing.assert_allclose(onnx_out, expected, rtol=1e-5, atol=1e-5)


def test_torch_export_static_and_dynamic_round_trip_equals_eager(tmp_path):
    model = _model()
    example = (torch.randn(2, 3, 20, 21),)
    static = torch.export.export(model, example)
    torch.testing.assert_close(static.module()(*example), model(*example), rtol=0, atol=0)
    dynamic = torch.export.export(model, example, dynamic_shapes=({0: Dim("batch", max=64), **SPATIAL_DIMS},))
    # A saved and reloaded program, so the round trip covers serialization of the symbolic padding.
    torch.export.save(dynamic, tmp_path / "model.pt2")
    reloaded = torch.export.load(tmp_path / "model.pt2").module()
    for height, width in SIZES:
        x = torch.randn(3, 3, height, width)
        # The exported graph runs the same ATen kernels on the same inputs as eager: bit-identical.
        torch.testing.assert_close(reloaded(x), model(x), rtol=0, atol=0)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v2"])
def test_mobilenet_torch_export_with_dynamic_batch_and_size_equals_eager(name):
    model = create_model(name, width_mult=0.25, num_classes=7).eval()
    example = (torch.randn(2, 3, 64, 64),)
    # The five stride-2 stages shrink 32x; below 33 pixels the last feature map is 1x1, a size
    # torch.export specializes, so dynamic sizes start at 33.
    dims = {0: Dim("batch", max=64), 2: Dim("height", min=33, max=1024), 3: Dim("width", min=33, max=1024)}
    program = torch.export.export(model, example, dynamic_shapes=(dims,))
    exported = program.module()
    with torch.no_grad():
        for batch, (height, width) in zip((1, 3), SIZES):
            x = torch.randn(batch, 3, height, width)
            # Same ATen kernels on the same inputs as eager (eval-mode batch norm included): bit-identical.
            torch.testing.assert_close(exported(x), model(x), rtol=0, atol=0)


def test_torch_compile_captures_one_graph_with_same_values():
    model = _model()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    x = torch.randn(2, 3, 17, 17)
    # aot_eager runs the decomposed ATen graph of the same convolutions (no code generation): at most a
    # reordered float32 sum of <= 8 x 4 x 4 O(1) products (128 x 6e-8 = 8e-6), inside the default atol 1e-5.
    torch.testing.assert_close(compiled(x), model(x))
