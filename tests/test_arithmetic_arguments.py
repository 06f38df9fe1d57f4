"""The arguments of sepconv.arithmetic: every validation message and every default, exactly.

tests/test_arithmetic.py checks the formulas against PyTorch's layers and by hand; this file pins what
those checks leave loose (a mutation run found each gap): the full text of every ValueError (the
parameter it names and the value it quotes, matched by an anchored regex so that "XXkernel_sizeXX" or
"None" cannot pass), bools and floats refused as integers, and the default of every optional argument,
each worked out by hand (the arithmetic is written in the comments).
"""

from __future__ import annotations

import re

import pytest

from sepconv import arithmetic
from sepconv.arithmetic import ReceptiveField
from sepconv.errors import ArgumentTypeError, ParameterError

# ---------------------------------------------------------------------------------------------------
# A1: every validated parameter of every public function, each bad value -> the exact message
# ---------------------------------------------------------------------------------------------------

POSITIVE = "{name} must be a positive integer, got {value}"
NON_NEGATIVE = "{name} must be a non-negative integer, got {value}"

# (bad value passed, the text the message quotes). 1.0 and True are refused although they compare
# equal to a valid int: only the type checks catch them.
BAD_POSITIVE = [(0, "0"), (-1, "-1"), (2.5, "2.5"), (1.0, "1.0"), (True, "True"), (False, "False")]
BAD_NON_NEGATIVE = [(-1, "-1"), (1.5, "1.5"), (0.0, "0.0"), (False, "False"), (True, "True")]
# An int-or-pair parameter: a bad int, or a pair with one bad entry (in either position); the message
# quotes the bad entry (a bare float too).
BAD_PAIR = [
    (0, "0"),
    (-1, "-1"),
    (True, "True"),
    (2.5, "2.5"),
    ((3, 0), "0"),
    ((0, 3), "0"),
    ((3, -2), "-2"),
    ((3, 2.5), "2.5"),
    ((True, 3), "True"),
]

# function name -> (valid keyword arguments, {validated parameter: kind}). Every call site of
# check_positive / check_non_negative / _pair in the module is reached through one of these.
CALLS = {
    "valid_groups": (
        {"in_channels": 16, "out_channels": 32},
        {"in_channels": "positive", "out_channels": "positive"},
    ),
    "check_groups": (
        {"in_channels": 16, "out_channels": 32, "groups": 4},
        {"in_channels": "positive", "out_channels": "positive", "groups": "positive"},
    ),
    "conv_output_size": (
        {"input_size": 10, "kernel_size": 3, "stride": 1, "padding": 0, "dilation": 1},
        {
            "input_size": "positive",
            "kernel_size": "positive",
            "stride": "positive",
            "padding": "non_negative",
            "dilation": "positive",
        },
    ),
    "conv_transpose_output_size": (
        {"input_size": 4, "kernel_size": 3, "stride": 2, "padding": 0, "output_padding": 0, "dilation": 1},
        {
            "input_size": "positive",
            "kernel_size": "positive",
            "stride": "positive",
            "padding": "non_negative",
            "output_padding": "non_negative",
            "dilation": "positive",
        },
    ),
    "same_padding": (
        {"input_size": 10, "kernel_size": 3, "stride": 1, "dilation": 1},
        {"input_size": "positive", "kernel_size": "positive", "stride": "positive", "dilation": "positive"},
    ),
    "conv_params": (
        {"in_channels": 16, "out_channels": 32, "kernel_size": 3, "groups": 1},
        {"in_channels": "positive", "out_channels": "positive", "kernel_size": "pair", "groups": "positive"},
    ),
    "conv_macs": (
        {"in_channels": 16, "out_channels": 32, "kernel_size": 3, "output_size": 8, "groups": 1},
        {
            "in_channels": "positive",
            "out_channels": "positive",
            "kernel_size": "pair",
            "output_size": "pair",
            "groups": "positive",
            "batch_size": "positive",
        },
    ),
    "conv_transpose_macs": (
        {"in_channels": 16, "out_channels": 32, "kernel_size": 3, "input_size": 8, "groups": 1},
        {
            "in_channels": "positive",
            "out_channels": "positive",
            "kernel_size": "pair",
            "input_size": "pair",
            "groups": "positive",
            "batch_size": "positive",
        },
    ),
    "depthwise_params": (
        {"in_channels": 8, "kernel_size": 3, "depth_multiplier": 1},
        {"in_channels": "positive", "kernel_size": "pair", "depth_multiplier": "positive"},
    ),
    "pointwise_params": (
        {"in_channels": 16, "out_channels": 32, "groups": 1},
        {"in_channels": "positive", "out_channels": "positive", "groups": "positive"},
    ),
    "separable_params": (
        {"in_channels": 16, "out_channels": 32, "kernel_size": 3, "depth_multiplier": 1},
        {
            "in_channels": "positive",
            "out_channels": "positive",
            "kernel_size": "pair",
            "depth_multiplier": "positive",
        },
    ),
    "separable_macs": (
        {"in_channels": 16, "out_channels": 32, "kernel_size": 3, "output_size": 8},
        {
            "in_channels": "positive",
            "out_channels": "positive",
            "kernel_size": "pair",
            "output_size": "pair",
            "depth_multiplier": "positive",
            "batch_size": "positive",
        },
    ),
    "effective_kernel_size": (
        {"kernel_size": 3, "dilation": 2},
        {"kernel_size": "positive", "dilation": "positive"},
    ),
    "separable_cost_ratio": (
        {"out_channels": 32, "kernel_size": 3, "depth_multiplier": 1},
        {"out_channels": "positive", "kernel_size": "pair", "depth_multiplier": "positive"},
    ),
    "make_divisible": ({"value": 20, "divisor": 8}, {"divisor": "positive", "min_value": "positive"}),
    "receptive_field_step": (
        {"field": ReceptiveField(), "kernel_size": 3, "stride": 1, "padding": 0, "dilation": 1},
        {"kernel_size": "positive", "stride": "positive", "padding": "non_negative", "dilation": "positive"},
    ),
    "convolution_costs": (
        {"in_channels": 16, "out_channels": 32, "kernel_size": 3, "input_size": 10, "padding": 0},
        {
            "in_channels": "positive",
            "out_channels": "positive",
            "kernel_size": "positive",
            "input_size": "pair",
            "stride": "positive",
            "padding": "non_negative",
            "dilation": "positive",
            "depth_multiplier": "positive",
        },
    ),
}

_BAD = {"positive": BAD_POSITIVE, "non_negative": BAD_NON_NEGATIVE, "pair": BAD_PAIR}
_TEMPLATE = {"positive": POSITIVE, "non_negative": NON_NEGATIVE, "pair": POSITIVE}


# Public names that take no argument to validate here: the two checks are tested directly below; the
# two cost types are results.
NOT_IN_CALLS = {
    "ConvolutionCost",
    "ConvolutionCosts",
    "ReceptiveField",
    "check_positive",
    "check_non_negative",
}


def test_calls_cover_every_public_function():
    # A new public function must be added to CALLS (or, knowingly, to NOT_IN_CALLS).
    assert set(arithmetic.__all__) == set(CALLS) | NOT_IN_CALLS


def _cases():
    for function, (valid, params) in CALLS.items():
        for param, kind in params.items():
            yield pytest.param(function, valid, param, kind, id=f"{function}-{param}")


# One test per parameter, looping over its bad values (one test per value would be 250 items, about
# 2.5 s of pytest overhead for microseconds of work); each failure still names the function, the
# parameter and the value.
@pytest.mark.parametrize(("function", "valid", "param", "kind"), list(_cases()))
def test_every_bad_argument_is_refused_with_a_message_naming_it(function, valid, param, kind):
    call = getattr(arithmetic, function)
    # The valid call itself must succeed, so that the error below can only come from `param`.
    call(**valid)
    for bad, quoted in _BAD[kind]:
        expected = "^" + re.escape(_TEMPLATE[kind].format(name=param, value=quoted)) + "$"
        with pytest.raises(ValueError, match=expected) as refused:
            got = call(**{**valid, param: bad})
            pytest.fail(f"{function}({param}={bad!r}) returned {got!r} instead of raising")
        # the parameter's name also travels as data, for the CLI to name its flag
        assert refused.value.param == param, (function, param, bad)


@pytest.mark.parametrize(
    ("value", "kind", "message"),
    [
        ("20", ArgumentTypeError, "value must be a finite number, got str '20'"),
        (None, ArgumentTypeError, "value must be a finite number, got NoneType None"),
        (True, ArgumentTypeError, "value must be a finite number, got bool True"),
        (float("nan"), ParameterError, "value must be a finite number, got nan"),
        (float("-inf"), ParameterError, "value must be a finite number, got -inf"),
    ],
)
def test_make_divisible_refuses_a_value_that_is_not_a_finite_number(value, kind, message):
    with pytest.raises(kind, match="^" + re.escape(message) + "$") as refused:
        arithmetic.make_divisible(value)
    assert type(refused.value) is kind and refused.value.param == "value"


def test_receptive_field_step_refuses_a_field_of_another_type():
    message = "field must be a ReceptiveField, got tuple (3, 1, 0.0)"
    with pytest.raises(ArgumentTypeError, match="^" + re.escape(message) + "$") as refused:
        arithmetic.receptive_field_step((3, 1, 0.0), kernel_size=3)
    assert refused.value.param == "field"


def test_a_pair_of_three_is_refused_naming_the_parameter():
    with pytest.raises(
        ValueError, match=r"^kernel_size must be a positive integer or a pair of them, got \(3, 3, 3\)$"
    ):
        arithmetic.conv_params(4, 8, (3, 3, 3))
    with pytest.raises(ValueError) as refused:
        arithmetic.conv_params(4, 8, (3, 3, 3))
    assert refused.value.param == "kernel_size"


def test_the_message_template_is_exact():
    # One case spelled out without the template, so the template itself is pinned too.
    with pytest.raises(ValueError, match=r"^kernel_size must be a positive integer, got 0$"):
        arithmetic.conv_output_size(10, kernel_size=0)
    with pytest.raises(ValueError, match=r"^padding must be a non-negative integer, got -1$"):
        arithmetic.conv_output_size(10, kernel_size=3, padding=-1)
    with pytest.raises(ValueError, match=r"^output_size must be a positive integer, got 0$"):
        arithmetic.conv_macs(4, 8, 3, output_size=(5, 0))


# ---------------------------------------------------------------------------------------------------
# A2: check_positive / check_non_negative refuse bools and floats (not only values out of range)
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("check", "value", "message"),
    [
        (arithmetic.check_positive, True, r"^width must be a positive integer, got True$"),
        (arithmetic.check_positive, 2.5, r"^width must be a positive integer, got 2\.5$"),
        (arithmetic.check_positive, 3.0, r"^width must be a positive integer, got 3\.0$"),
        (arithmetic.check_non_negative, False, r"^width must be a non-negative integer, got False$"),
        (arithmetic.check_non_negative, True, r"^width must be a non-negative integer, got True$"),
        (arithmetic.check_non_negative, 1.5, r"^width must be a non-negative integer, got 1\.5$"),
        (arithmetic.check_non_negative, "1", r"^width must be a non-negative integer, got '1'$"),
    ],
)
def test_checks_refuse_bools_and_floats(check, value, message):
    with pytest.raises(ValueError, match=message):
        check("width", value)


def test_checks_return_valid_values_unchanged():
    assert arithmetic.check_positive("width", 1) == 1
    assert arithmetic.check_positive("width", 10**12) == 10**12
    assert arithmetic.check_non_negative("width", 0) == 0
    assert arithmetic.check_non_negative("width", 7) == 7


# ---------------------------------------------------------------------------------------------------
# A3, A4 and the other messages that quote computed values
# ---------------------------------------------------------------------------------------------------


def test_kernel_wider_than_the_padded_input_message():
    # k=3, d=2: effective kernel 2*(3-1)+1 = 5 pixels > 4 + 2*0.
    with pytest.raises(
        ValueError,
        match=r"^kernel_size=3 with dilation=2 spans 5 pixels, more than the padded input \(4 \+ 2\*0\)$",
    ):
        arithmetic.conv_output_size(4, kernel_size=3, dilation=2)
    # k=5, d=1: 1*(5-1)+1 = 5 pixels > 1 + 2*1 = 3.
    with pytest.raises(
        ValueError,
        match=r"^kernel_size=5 with dilation=1 spans 5 pixels, more than the padded input \(1 \+ 2\*1\)$",
    ):
        arithmetic.conv_output_size(1, kernel_size=5, padding=1)
    with pytest.raises(ValueError) as refused:
        arithmetic.conv_output_size(1, kernel_size=5)
    assert refused.value.param == "kernel_size"
    # Exactly fitting is fine: 2 + 2*1 - 4 = 0 -> one output.
    assert arithmetic.conv_output_size(2, kernel_size=4, padding=1) == 1


def test_transposed_padding_that_leaves_no_output_message():
    # (1-1)*1 - 2*1 + 1*(1-1) + 0 + 1 = -1
    with pytest.raises(ValueError, match=r"^padding=1 leaves no output \(computed size -1\)$"):
        arithmetic.conv_transpose_output_size(1, kernel_size=1, padding=1)
    # (2-1)*1 - 2*2 + 1*(3-1) + 0 + 1 = 0
    with pytest.raises(
        ValueError, match=r"^padding=2 leaves no output \(computed size 0\)$"
    ) as refused_padding:
        arithmetic.conv_transpose_output_size(2, kernel_size=3, padding=2)
    assert refused_padding.value.param == "padding"
    # (1-1)*1 - 0 + 0 + 0 + 1 = 1: the smallest size allowed.
    assert arithmetic.conv_transpose_output_size(1, kernel_size=1) == 1


def test_output_padding_and_groups_messages():
    with pytest.raises(
        ValueError, match=r"^output_padding=2 must be smaller than stride=2 or dilation=1$"
    ) as refused:
        arithmetic.conv_transpose_output_size(4, kernel_size=3, stride=2, output_padding=2)
    assert refused.value.param == "output_padding"
    # output_padding=1 < max(stride=1, dilation=2) is allowed: (4-1)*1 - 0 + 2*(3-1) + 1 + 1 = 9
    assert arithmetic.conv_transpose_output_size(4, kernel_size=3, dilation=2, output_padding=1) == 9
    # gcd(16, 32) = 16, whose divisors are 1, 2, 4, 8, 16.
    with pytest.raises(
        ValueError,
        match=r"^groups=3 must divide in_channels=16 and out_channels=32; valid values: \[1, 2, 4, 8, 16\]$",
    ):
        arithmetic.check_groups(16, 32, 3)
    with pytest.raises(ValueError) as refused:
        arithmetic.check_groups(16, 32, 3)
    assert refused.value.param == "groups"
    assert arithmetic.check_groups(16, 32, 16) == 16


# ---------------------------------------------------------------------------------------------------
# A5: defaults of optional arguments
# ---------------------------------------------------------------------------------------------------


def test_defaults_by_hand():
    # conv_params, bias=True, groups=1 by default: 3*3*16*32 + 32 = 4608 + 32 = 4640
    assert arithmetic.conv_params(16, 32, 3) == 4640
    # pointwise_params, bias=True, groups=1 by default: 1*1*16*32 + 32 = 544
    assert arithmetic.pointwise_params(16, 32) == 544
    # depthwise_params, depth_multiplier=1, bias=True: 3*3*(8/8)*8 + 8 = 80 (multiplier 2 would give 160)
    assert arithmetic.depthwise_params(8, 3) == 80
    # effective_kernel_size, dilation=1: 1*(3-1)+1 = 3
    assert arithmetic.effective_kernel_size(3) == 3
    # conv_transpose_output_size, stride=1, padding=0, output_padding=0, dilation=1:
    # (4-1)*1 - 0 + 1*(3-1) + 0 + 1 = 6 (stride 2 would give 9)
    assert arithmetic.conv_transpose_output_size(4, 3) == 6
    # same_padding, stride=1, dilation=1: output 224, total = (224-1)*1 + 3 - 224 = 2 -> (1, 1)
    assert arithmetic.same_padding(224, 3) == (1, 1)
    # conv_output_size, stride=1, padding=0, dilation=1: 10 - 3 + 1 = 8
    assert arithmetic.conv_output_size(10, 3) == 8
    # conv_macs, groups=1, batch_size=1: 32 * 8*8 * 3*3 * 16 = 294912
    assert arithmetic.conv_macs(16, 32, 3, 8) == 294912
    # make_divisible, divisor=8: int(20 + 4) // 8 * 8 = 24
    assert arithmetic.make_divisible(20) == 24
    # ReceptiveField(): one pixel, stride one, centred on pixel 0
    assert ReceptiveField() == ReceptiveField(size=1, stride=1, start=0.0)
