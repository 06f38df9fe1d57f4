"""summarize's argument errors name the parameter, the value and what would be valid."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from sepconv.analysis import summarize


def _model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())


def test_one_number_for_input_size_says_which_shape_to_give():
    with pytest.raises(TypeError) as refused:
        summarize(_model(), 28)
    assert str(refused.value) == (
        "input_size must be positive integers, batch included (1, 3, 224, 224); got 28: one number is "
        "ambiguous, give (1, C, 28, 28) for 28x28 images"
    )
    assert isinstance(refused.value, ValueError)  # the sepconv command reports it as one line


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda m: summarize(m, "1,1,28,28"), TypeError, "got '1,1,28,28'"),
        (lambda m: summarize(m, (1, 1, 28.0, 28)), TypeError, "got (1, 1, 28.0, 28)"),
        (lambda m: summarize(m, (1, 0, 28, 28)), ValueError, "got (1, 0, 28, 28)"),
        (lambda m: summarize(m, ()), ValueError, "got ()"),
        (
            lambda m: summarize("resnet", (1, 1, 8, 8)),
            TypeError,
            "model must be an nn.Module, got str 'resnet'",
        ),
        (
            lambda m: summarize(m, (1, 1, 8, 8), depth="1"),
            TypeError,
            "depth must be a non-negative integer or None, got '1'",
        ),
        (
            lambda m: summarize(m, (1, 1, 8, 8), depth=-1),
            ValueError,
            "depth must be a non-negative integer or None, got -1",
        ),
        (lambda m: summarize(m, inputs=5), TypeError, "inputs must be a tensor or a sequence"),
    ],
)
def test_bad_arguments_name_the_parameter_and_value(call, error, message):
    with pytest.raises(error) as refused:
        call(_model())
    assert message in str(refused.value)
    if error is ValueError:
        assert not isinstance(refused.value, TypeError)


def test_numpy_sizes_and_depth_are_taken_as_ints():
    model = _model()
    expected = summarize(model, (1, 1, 8, 8))
    # 4 * 9 + 4 parameters; 4 * 6 * 6 * 9 MACs: worked by hand.
    assert (expected.total_params, expected.total_macs) == (40, 1296)
    for size in (np.array([1, 1, 8, 8]), torch.Size([1, 1, 8, 8]), [np.int64(1), 1, np.int32(8), 8]):
        summary = summarize(model, size, depth=np.int64(1))
        assert (summary.total_params, summary.total_macs) == (40, 1296)
        assert summary.input_shapes == ((1, 1, 8, 8),) and summary.depth == 1 and type(summary.depth) is int
