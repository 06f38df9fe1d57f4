"""Argument types of the model builders and create_model: numpy numbers work, wrong types are TypeErrors.

A recipe is stored as JSON, so numpy numbers given to ``create_model`` are recorded as the plain
numbers they stand for; a wrong type (a str width, a float class count) raises a TypeError that is
also a ValueError, naming the argument, the value and the valid range.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import sepconv
from sepconv.checks import check_float, check_int
from sepconv.errors import ArgumentTypeError
from sepconv.models import create_model, model_spec
from sepconv.models.validation import check_channel_list


def test_numpy_numbers_build_the_model_ints_build_and_record_plain_json():
    torch.manual_seed(0)
    with_numpy = create_model(
        "separable_cnn",
        num_classes=np.int64(5),
        widths=[np.int32(8), np.int64(8), 16, 16],
        dropout=np.float32(0.25),
    )
    torch.manual_seed(0)
    with_ints = create_model("separable_cnn", num_classes=5, widths=[8, 8, 16, 16], dropout=0.25)
    # float32(0.25) is exactly 0.25, so the recipe is the one written with Python numbers.
    assert json.dumps(model_spec(with_numpy)) == json.dumps(
        {"name": "separable_cnn", "kwargs": {"num_classes": 5, "widths": [8, 8, 16, 16], "dropout": 0.25}}
    )
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    assert torch.equal(with_numpy.eval()(x), with_ints.eval()(x))
    assert with_numpy.classifier[1].out_features == 5


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: create_model(12),
            "name must be a model name (a str such as 'mobilenet_v2'), got 12; "
            "list them with sepconv.models.list_models()",
        ),
        (
            lambda: create_model("standard_cnn", num_classes=10.0),
            "num_classes must be an integer in [1, 1,000,000], got 10.0",
        ),
        (
            lambda: create_model("standard_cnn", widths="8,8,16,16"),
            "widths must be 4 integers in [1, 65,536] (channel counts), got '8,8,16,16'",
        ),
        (
            lambda: create_model("standard_cnn", widths=[8, 8, 16, 16.0]),
            "widths must be 4 integers in [1, 65,536] (channel counts), got 16.0 in [8, 8, 16, 16.0]",
        ),
        (
            lambda: create_model("mobilenet_v2", width_mult="0.5"),
            "width_mult must be a finite number in (0, 64], got '0.5'",
        ),
        (
            lambda: create_model("mobilenet_v1", dropout=None),
            "dropout must be a finite number in [0, 1), got None",
        ),
    ],
)
def test_wrong_types_are_type_errors_naming_the_argument(build, message):
    with pytest.raises(TypeError) as refused:
        build()
    assert str(refused.value) == message
    assert isinstance(refused.value, ArgumentTypeError) and isinstance(refused.value, ValueError)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: check_int("num_classes", 0, minimum=1, maximum=10),
            "num_classes must be an integer in [1, 10], got 0",
        ),
        (
            lambda: check_float("dropout", float("nan"), minimum=0, maximum=1),
            "dropout must be a finite number in [0, 1], got nan",
        ),
        (
            lambda: check_channel_list("widths", [8, 8], 4),
            "widths must be 4 integers in [1, 65,536] (channel counts), got [8, 8]",
        ),
        (
            lambda: check_channel_list("widths", [8, 8, 8, 0], 4),
            "widths must be 4 integers in [1, 65,536] (channel counts), got 0 in [8, 8, 8, 0]",
        ),
    ],
)
def test_wrong_values_stay_value_errors(build, message):
    with pytest.raises(ValueError) as refused:
        build()
    assert not isinstance(refused.value, TypeError)
    assert str(refused.value) == message


def test_checks_return_plain_python_numbers():
    assert type(check_int("num_classes", np.int16(7), minimum=1, maximum=10)) is int
    assert check_float("dropout", np.float32(0.5), minimum=0, maximum=1) == 0.5
    assert check_channel_list("widths", np.array([1, 2, 3, 4]).tolist(), 4) == (1, 2, 3, 4)
    assert [type(item) for item in check_channel_list("widths", [np.int64(1)] * 4, 4)] == [int] * 4


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda tmp: sepconv.save_model("model", tmp / "m.safetensors"),
            TypeError,
            "model must be an nn.Module, got str 'model'",
        ),
        (
            lambda tmp: sepconv.save_model(create_model("standard_cnn"), 3),
            TypeError,
            "path must be a file path (str or os.PathLike), got 3",
        ),
        (
            lambda tmp: sepconv.save_model(create_model("standard_cnn"), tmp / "m.safetensors", spec=["x"]),
            TypeError,
            "spec must be a dict",
        ),
        (
            lambda tmp: sepconv.load_model(None),
            TypeError,
            "path must be a file path (str or os.PathLike), got None",
        ),
        (lambda tmp: sepconv.load_model(""), ValueError, "path must be a file path, got ''"),
    ],
)
def test_save_and_load_name_a_wrong_argument(tmp_path, call, error, message):
    with pytest.raises(error) as refused:
        call(tmp_path)
    assert str(refused.value).startswith(message)
    assert isinstance(refused.value, ValueError)  # a TypeError here is also one, for `except ValueError`
    assert list(tmp_path.iterdir()) == []


def test_default_input_size_names_a_wrong_type():
    from sepconv.models import default_input_size

    with pytest.raises(TypeError) as refused:
        default_input_size(28)
    assert str(refused.value) == (
        "name_or_model must be a model name (str) or a model built by create_model, got 28"
    )
    assert default_input_size("standard_cnn", in_channels=np.int64(3)) == (3, 28, 28)
