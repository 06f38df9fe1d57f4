"""sepconv.arithmetic with numpy integers (taken, results plain ints) and wrong types (TypeErrors).

tests/test_arithmetic_arguments.py pins every message; this file pins the *kind* of error (a wrong
type is a TypeError that is also a ValueError, a wrong value a ValueError only), that numpy integers
are accepted wherever an int is, and the depth multiplier in the separable cost ratio.
"""

from __future__ import annotations

import numpy as np
import pytest

from sepconv import arithmetic
from sepconv.arithmetic import ArgumentTypeError, ReceptiveField


def test_numpy_integers_give_the_plain_int_results_of_python_ints():
    i = np.int64
    assert arithmetic.conv_output_size(i(10), i(3), stride=np.int32(2), padding=i(1)) == 5  # (10+2-3)//2+1
    params = arithmetic.conv_params(i(16), i(32), (i(3), i(3)), groups=i(4), bias=False)
    assert params == 3 * 3 * 4 * 32 and type(params) is int
    # 2**20 out channels x 2**20 x 2**20 pixels x 2**20 inputs = 2**80: int64 would wrap, ints do not.
    macs = arithmetic.conv_macs(i(2**20), i(2**20), 1, i(2**20))
    assert macs == 2**80 and type(macs) is int
    assert (
        arithmetic.separable_params(i(3), i(4), i(3), depth_multiplier=i(2), bias=False) == 3 * 2 * 9 + 6 * 4
    )
    assert arithmetic.valid_groups(i(16), np.uint8(32)) == [1, 2, 4, 8, 16]
    assert arithmetic.make_divisible(np.float32(24.0), i(8)) == 24


@pytest.mark.parametrize(
    "call",
    [
        lambda: arithmetic.conv_output_size(10.0, 3),
        lambda: arithmetic.conv_params(4, 8, "3"),
        lambda: arithmetic.check_groups(4, 8, None),
        lambda: arithmetic.make_divisible("24"),
        lambda: arithmetic.make_divisible(24, min_value=8.0),
        lambda: arithmetic.receptive_field_step((1, 1, 0), 3),
    ],
)
def test_wrong_types_are_type_errors_and_value_errors(call):
    with pytest.raises(TypeError) as refused:
        call()
    assert isinstance(refused.value, ArgumentTypeError) and isinstance(refused.value, ValueError)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: arithmetic.make_divisible(float("nan")), "value must be a finite number, got nan"),
        (
            lambda: arithmetic.receptive_field_step(ReceptiveField(), 3, stride=0),
            "stride must be a positive integer, got 0",
        ),
        (
            lambda: arithmetic.receptive_field_step(ReceptiveField(), 3, padding=-1),
            "padding must be a non-negative integer, got -1",
        ),
        (
            lambda: arithmetic.separable_cost_ratio(32, 3, depth_multiplier=0),
            "depth_multiplier must be a positive integer, got 0",
        ),
    ],
)
def test_wrong_values_are_value_errors_naming_the_parameter(call, message):
    with pytest.raises(ValueError) as refused:
        call()
    assert not isinstance(refused.value, TypeError)
    assert str(refused.value) == message


@pytest.mark.parametrize("depth_multiplier", [1, 2, 3])
def test_separable_cost_ratio_includes_the_depth_multiplier(depth_multiplier):
    # The ratio of the MAC counts at one output size (independent formulas), and m * (1/C_out + 1/k^2).
    separable = arithmetic.separable_macs(16, 64, 3, 10, depth_multiplier=depth_multiplier)
    standard = arithmetic.conv_macs(16, 64, 3, 10)
    ratio = arithmetic.separable_cost_ratio(64, 3, depth_multiplier=depth_multiplier)
    assert ratio == pytest.approx(separable / standard, rel=1e-15)
    assert ratio == pytest.approx(depth_multiplier * (1 / 64 + 1 / 9), rel=1e-15)
