"""Bad arguments and bad inputs: a ValueError that names the parameter (or layer), the value and the fix."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from sepconv.layers import Conv2d, DepthwiseConv2d, InvertedResidual, PointwiseConv2d, SeparableConv2d
from sepconv.models import create_model


@pytest.mark.parametrize(
    ("build", "pattern"),
    [
        (
            lambda: Conv2d(6, 9, 3, groups=2),
            r"groups=2 must divide in_channels=6 and out_channels=9; valid values: \[1, 3\]",
        ),
        (lambda: PointwiseConv2d(6, 8, groups=4), r"groups=4 .* valid values: \[1, 2\]"),
        (lambda: DepthwiseConv2d(4, 0), r"kernel_size must be a positive int or a pair of them, got 0"),
        (lambda: DepthwiseConv2d(4, (3, -1)), r"kernel_size .* got \(3, -1\)"),
        (lambda: DepthwiseConv2d(4, 3, stride=0), r"stride must be a positive int .* got 0"),
        (lambda: DepthwiseConv2d(4, 3, dilation=-2), r"dilation must be a positive int .* got -2"),
        (
            lambda: DepthwiseConv2d(4, 3, depth_multiplier=0),
            r"depth_multiplier must be a positive integer, got 0",
        ),
        (lambda: DepthwiseConv2d(0, 3), r"in_channels must be a positive integer, got 0"),
        (
            lambda: SeparableConv2d(4, 8, 3, padding=-1),
            r"padding must be an int >= 0, a pair of them, 'valid' or 'same'; got -1",
        ),
        (lambda: SeparableConv2d(4, 8, 3, padding="full"), r"padding must be .* got 'full'"),
        (
            lambda: SeparableConv2d(4, 8, 3, padding_mode="mirror"),
            r"padding_mode must be one of .* got 'mirror'",
        ),
        (lambda: SeparableConv2d(4, 0, 3), r"out_channels must be a positive integer, got 0"),
        (lambda: InvertedResidual(8, 8, 1, 0), r"expand_ratio must be a positive finite number, got 0"),
        (lambda: InvertedResidual(8, 8, 0, 6), r"stride must be a positive int .* got 0"),
        (lambda: DepthwiseConv2d(4, 3.0), r"kernel_size must be a positive int .* got 3.0"),
    ],
)
def test_bad_arguments_name_parameter_and_value(build, pattern):
    with pytest.raises(ValueError, match=pattern):
        build()


@pytest.mark.slow  # a fresh interpreter under python -O: about 8 s
def test_argument_checks_survive_python_dash_o():
    # assert statements vanish under -O; our checks must not.
    code = "from sepconv.layers import DepthwiseConv2d\ntry:\n    DepthwiseConv2d(4, 3, stride=0)\nexcept ValueError as e:\n    print(e)"
    result = subprocess.run([sys.executable, "-O", "-c", code], capture_output=True, text=True, check=True)
    assert "stride must be a positive int" in result.stdout


def test_wrong_channel_count_names_layer_and_both_counts():
    model = create_model("separable_cnn", in_channels=1)
    with pytest.raises(
        ValueError,
        match=r"layer 'features.0.0' expects input of shape \(N, 1, H, W\).*got shape \(2, 3, 28, 28\)",
    ):
        model(torch.randn(2, 3, 28, 28))


def test_channels_last_input_gets_a_hint():
    layer = DepthwiseConv2d(3, 3)
    with pytest.raises(ValueError, match=r"channels-last \(N, H, W, C\): pass x.permute\(0, 3, 1, 2\)"):
        layer(torch.randn(2, 16, 16, 3))


def test_unbatched_input_is_accepted_like_torch_and_confusion_gets_a_hint():
    layer = DepthwiseConv2d(3, 3)
    # One image through the same kernel with or without a batch axis: the same 9 products per output,
    # so the default float32 tolerances (rtol 1.3e-6, atol 1e-5) are ample.
    torch.testing.assert_close(layer(torch.ones(3, 8, 8)), layer(torch.ones(1, 3, 8, 8))[0])
    with pytest.raises(ValueError, match=r"a 3-D tensor is read as one unbatched image \(C, H, W\)"):
        layer(torch.randn(8, 16, 16))
    with pytest.raises(ValueError, match=r"batch and channel dimensions look swapped"):
        layer(torch.randn(3, 5, 16, 16))
    with pytest.raises(ValueError, match=r"single-channel image without batch: pass x\[None, None\]"):
        PointwiseConv2d(1, 4)(torch.randn(16, 16))


def test_unknown_model_lists_close_matches():
    with pytest.raises(ValueError, match=r"unknown model name 'mobilenetv2'.*did you mean mobilenet_v2"):
        create_model("mobilenetv2")
    with pytest.raises(ValueError, match=r"did you mean .*torchvision:resnet18"):
        create_model("torchvision:resnet-18")
