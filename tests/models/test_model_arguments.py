"""Model arguments are checked before anything is built, and every model knows its input size."""

from __future__ import annotations

import math

import pytest
import torch

from sepconv.models import (
    create_model,
    default_input_size,
    mobilenet_v1,
    mobilenet_v2,
    separable_cnn,
    standard_cnn,
)
from sepconv.models.validation import MAX_PARAMETERS

BAD_ARGUMENTS = [
    # (model, arguments, text the message must hold: the argument and its value)
    ("mobilenet_v1", {"width_mult": float("inf")}, "width_mult must be a finite number in (0, 64], got inf"),
    ("mobilenet_v1", {"width_mult": float("nan")}, "width_mult must be a finite number in (0, 64], got nan"),
    ("mobilenet_v2", {"width_mult": 0}, "width_mult must be a finite number in (0, 64], got 0"),
    ("mobilenet_v2", {"width_mult": -0.5}, "width_mult must be a finite number in (0, 64], got -0.5"),
    ("mobilenet_v2", {"width_mult": 1e6}, "width_mult must be a finite number in (0, 64], got 1000000.0"),
    ("mobilenet_v2", {"width_mult": True}, "width_mult must be a finite number in (0, 64], got True"),
    ("mobilenet_v2", {"round_nearest": 0}, "round_nearest must be an integer in [1, 65,536], got 0"),
    ("mobilenet_v1", {"num_classes": 0}, "num_classes must be an integer in [1, 1,000,000], got 0"),
    (
        "mobilenet_v1",
        {"num_classes": 10**9},
        "num_classes must be an integer in [1, 1,000,000], got 1000000000",
    ),
    ("standard_cnn", {"num_classes": 10.0}, "num_classes must be an integer in [1, 1,000,000], got 10.0"),
    ("standard_cnn", {"in_channels": True}, "in_channels must be an integer in [1, 65,536], got True"),
    ("separable_cnn", {"in_channels": 0}, "in_channels must be an integer in [1, 65,536], got 0"),
    (
        "standard_cnn",
        {"widths": (8, 8, 8)},
        "widths must be 4 integers in [1, 65,536] (channel counts), got (8, 8, 8)",
    ),
    (
        "standard_cnn",
        {"widths": "abcd"},
        "widths must be 4 integers in [1, 65,536] (channel counts), got 'abcd'",
    ),
    (
        "separable_cnn",
        {"widths": [8, 0, 8, 8]},
        "widths must be 4 integers in [1, 65,536] (channel counts), got 0 in [8, 0, 8, 8]",
    ),
    (
        "standard_cnn",
        {"widths": [10**6] * 4},
        "widths must be 4 integers in [1, 65,536] (channel counts), got 1000000",
    ),
    ("standard_cnn", {"dropout": 1.0}, "dropout must be a finite number in [0, 1), got 1.0"),
    ("mobilenet_v2", {"dropout": -0.1}, "dropout must be a finite number in [0, 1), got -0.1"),
    ("mobilenet_v1", {"dropout": float("nan")}, "dropout must be a finite number in [0, 1), got nan"),
]


@pytest.mark.parametrize(("name", "arguments", "message"), BAD_ARGUMENTS)
def test_bad_numbers_are_refused_naming_the_argument(name, arguments, message):
    with pytest.raises(ValueError) as refused:
        create_model(name, **arguments)
    assert message in str(refused.value)
    builder = {
        "mobilenet_v1": mobilenet_v1,
        "mobilenet_v2": mobilenet_v2,
        "standard_cnn": standard_cnn,
        "separable_cnn": separable_cnn,
    }[name]
    with pytest.raises(ValueError) as refused_directly:  # the builders check the same way
        builder(**arguments)
    assert message in str(refused_directly.value)


def test_unexpected_argument_names_the_model_and_lists_the_accepted_ones():
    with pytest.raises(ValueError) as refused:
        create_model("separable_cnn", width_mult=0.5)
    assert str(refused.value) == (
        "model 'separable_cnn' takes no argument 'width_mult'; it accepts: in_channels, num_classes, widths, dropout"
    )
    with pytest.raises(ValueError, match=r"torchvision:resnet18: .*unexpected keyword argument 'width_mult'"):
        create_model("torchvision:resnet18", width_mult=0.5)


def test_torchvision_arguments_are_checked_too():
    with pytest.raises(
        ValueError, match=r"torchvision:mobilenet_v2: width_mult must be a finite number, got inf"
    ):
        create_model("torchvision:mobilenet_v2", width_mult=math.inf)
    with pytest.raises(
        ValueError, match=r"num_classes must be an integer in \[1, 1,000,000\], got 1000000000"
    ):
        create_model("torchvision:resnet18", num_classes=10**9)
    # sizes too large to even describe are refused before any memory is asked for
    with pytest.raises(ValueError, match="'torchvision:mobilenet_v2' cannot be built with these arguments"):
        create_model("torchvision:mobilenet_v2", width_mult=1e9)


def test_models_above_the_parameter_budget_are_refused_before_allocation(monkeypatch):
    # Each argument within its bounds, together far too large: resnet18 has 11,689,512 parameters
    # with 1000 classes (torchvision's table); a head for 1,000,000 classes holds 512 * 1,000,000
    # weights and 1,000,000 biases instead of 512 * 1000 + 1000.
    expected = 11_689_512 - (512 * 1000 + 1000) + 512 * 1_000_000 + 1_000_000
    assert expected > MAX_PARAMETERS
    allocated = []
    monkeypatch.setattr(
        torch.nn.Linear, "reset_parameters", lambda self: allocated.append(self.weight.device)
    )
    with pytest.raises(ValueError) as refused:
        create_model("torchvision:resnet18", num_classes=1_000_000)
    assert f"would have {expected:,} parameters, more than the {MAX_PARAMETERS:,}" in str(refused.value)
    assert allocated == [torch.device("meta")]  # counted on the meta device only, never built for real


def test_default_input_sizes():
    assert default_input_size("standard_cnn") == (1, 28, 28)
    assert default_input_size("separable_cnn", in_channels=3) == (3, 28, 28)
    assert default_input_size("mobilenet_v1") == default_input_size("mobilenet_v2") == (3, 224, 224)
    assert default_input_size("torchvision:resnet18") == (3, 224, 224)
    assert default_input_size("torchvision:inception_v3") == (3, 299, 299)
    assert default_input_size("torchvision:vit_b_16", image_size=96) == (3, 96, 96)
    # a built model answers from the recipe create_model recorded on it
    assert default_input_size(create_model("standard_cnn", in_channels=3, widths=(4, 4, 4, 4))) == (3, 28, 28)
    with pytest.raises(ValueError, match=r"was not built by sepconv\.models\.create_model"):
        default_input_size(torch.nn.Conv2d(1, 1, 1))
    with pytest.raises(ValueError, match="unknown model name 'mobilenet_v3'"):
        default_input_size("mobilenet_v3")


@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v2", "standard_cnn", "separable_cnn"])
def test_every_sepconv_model_runs_on_its_default_input(name):
    model = create_model(name, num_classes=3).eval()
    with torch.no_grad():
        assert model(torch.zeros(1, *default_input_size(model))).shape == (1, 3)
