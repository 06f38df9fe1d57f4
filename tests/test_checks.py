"""sepconv.checks: the one family of argument checks, their exact wording, and the errors they raise.

Every refusal is pinned in full (the message users read), with its kind (a wrong type is an
ArgumentTypeError, a wrong value a ParameterError, both ValueErrors) and ``.param``.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from sepconv import checks
from sepconv.errors import ArgumentTypeError, ParameterError, SepconvError, UsageError


def refusal(call, kind=ParameterError):
    """The error ``call()`` raises, checked to be exactly of ``kind``."""
    with pytest.raises(SepconvError) as refused:
        call()
    assert type(refused.value) is kind, refused.value
    return refused.value


def test_error_classes_are_the_standard_ones_too():
    assert issubclass(ParameterError, ValueError) and issubclass(ParameterError, SepconvError)
    assert issubclass(ArgumentTypeError, TypeError) and issubclass(ArgumentTypeError, ParameterError)
    assert not issubclass(UsageError, ValueError)
    assert SepconvError("plain").param is None
    assert UsageError("no such file", param="path").param == "path"


def test_the_parameter_name_survives_pickling():
    # DDP workers and spawned processes send errors back pickled.
    for error in (ParameterError("lr must be...", param="lr"), ArgumentTypeError("x", param="seed")):
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and copy.args == error.args and copy.param == error.param
    both = ParameterError(
        "set devices lower; use a smaller batch_size", param="devices", mentions=("batch_size",)
    )
    assert pickle.loads(pickle.dumps(both)).mentions == ("batch_size",)


def test_an_error_is_rebuilt_with_its_parameter_before_its_state_is_restored():
    # pickle calls the rebuild function, then restores __dict__: the rebuilt error alone must already
    # carry param and mentions (a copy made without the state, or a subclass that keeps none, relies on it).
    error = ArgumentTypeError("set devices lower", param="devices", mentions=("batch_size",))
    rebuild, arguments, state = error.__reduce__()
    rebuilt = rebuild(*arguments)
    assert type(rebuilt) is ArgumentTypeError and rebuilt.args == ("set devices lower",)
    assert rebuilt.param == "devices" and rebuilt.mentions == ("batch_size",)
    assert state == {"param": "devices", "mentions": ("batch_size",)}


def test_arithmetic_keeps_exporting_the_type_error():
    from sepconv import arithmetic

    assert arithmetic.ArgumentTypeError is ArgumentTypeError
    assert arithmetic.check_positive is checks.check_positive


@pytest.mark.parametrize(
    ("bounds", "phrase", "plural"),
    [
        ({}, "an integer", "integers"),
        ({"minimum": 1}, "a positive integer", "positive integers"),
        ({"minimum": 0}, "a non-negative integer", "non-negative integers"),
        ({"minimum": 2}, "an integer >= 2", "integers >= 2"),
        ({"minimum": -5}, "an integer >= -5", "integers >= -5"),
        ({"maximum": 10_000}, "an integer <= 10,000", "integers <= 10,000"),
        ({"minimum": 1, "maximum": 65_536}, "an integer in [1, 65,536]", "integers in [1, 65,536]"),
        (
            {"minimum": 0, "maximum": 2**32 - 1},
            "an integer in [0, 4,294,967,295]",
            "integers in [0, 4,294,967,295]",
        ),
    ],
)
def test_one_phrase_for_each_kind_of_integer_bound(bounds, phrase, plural):
    assert checks.describe_integer(**bounds) == phrase
    assert checks.describe_integer(**bounds, plural=True) == plural


@pytest.mark.parametrize(
    ("bounds", "phrase"),
    [
        ({}, "a finite number"),
        ({"minimum": 0}, "a finite number >= 0"),
        ({"minimum": 0, "min_inclusive": False}, "a finite number > 0"),
        ({"maximum": 2.5}, "a finite number <= 2.5"),
        ({"maximum": 2.5, "max_inclusive": False}, "a finite number < 2.5"),
        ({"minimum": 0, "maximum": 1}, "a finite number in [0, 1]"),
        ({"minimum": 0, "maximum": 1, "max_inclusive": False}, "a finite number in [0, 1)"),
        ({"minimum": 0, "maximum": 64, "min_inclusive": False}, "a finite number in (0, 64]"),
        ({"minimum": 1e-8, "maximum": 1e6}, "a finite number in [1e-08, 1e+06]"),
    ],
)
def test_one_phrase_for_each_kind_of_float_bound(bounds, phrase):
    assert checks.describe_float(**bounds) == phrase


def test_bounds_written_wrong_are_refused_where_they_are_written():
    with pytest.raises(ValueError, match=r"^minimum must be <= maximum, got 2 > 1$"):
        checks.describe_integer(2, 1)
    with pytest.raises(ValueError, match=r"^maximum must be a finite number or None, got inf$"):
        checks.describe_float(0, float("inf"))


def test_check_int_returns_plain_ints_and_takes_numpy_integers():
    assert checks.check_int("seed", 7, minimum=0) == 7
    value = checks.check_int("seed", np.int64(7), minimum=0, maximum=10)
    assert value == 7 and type(value) is int
    assert type(checks.check_positive("groups", np.uint8(4))) is int
    assert checks.check_non_negative("padding", 0) == 0
    assert checks.check_int("offset", -3) == -3  # unbounded


@pytest.mark.parametrize(
    ("call", "kind", "message"),
    [
        (
            lambda: checks.check_positive("groups", 0),
            ParameterError,
            "groups must be a positive integer, got 0",
        ),
        (
            lambda: checks.check_positive("groups", 2.0),
            ArgumentTypeError,
            "groups must be a positive integer, got 2.0",
        ),
        (
            lambda: checks.check_positive("groups", True),
            ArgumentTypeError,
            "groups must be a positive integer, got True",
        ),
        (
            lambda: checks.check_positive("groups", "4"),
            ArgumentTypeError,
            "groups must be a positive integer, got '4'",
        ),
        (
            lambda: checks.check_non_negative("padding", -1),
            ParameterError,
            "padding must be a non-negative integer, got -1",
        ),
        (
            lambda: checks.check_int("num_classes", 10**9, minimum=1, maximum=1_000_000),
            ParameterError,
            "num_classes must be an integer in [1, 1,000,000], got 1000000000",
        ),
        (
            lambda: checks.check_int("min_kernel_size", 1, minimum=2),
            ParameterError,
            "min_kernel_size must be an integer >= 2, got 1",
        ),
        (
            lambda: checks.check_int("depth", 11, maximum=10),
            ParameterError,
            "depth must be an integer <= 10, got 11",
        ),
        (
            lambda: checks.check_int("seed", np.int64(-1), minimum=0, maximum=2**32 - 1),
            ParameterError,
            "seed must be an integer in [0, 4,294,967,295], got np.int64(-1)",
        ),
    ],
)
def test_check_int_refusals(call, kind, message):
    error = refusal(call, kind)
    assert str(error) == message
    assert error.param == message.split()[0]


def test_check_float_takes_ints_and_numpy_floats_and_returns_floats():
    assert checks.check_float("lr", 1, minimum=0, min_inclusive=False) == 1.0
    value = checks.check_float("dropout", np.float32(0.5), minimum=0, maximum=1)
    assert value == 0.5 and type(value) is float
    assert checks.check_float("momentum", 0.0, minimum=0, maximum=1, max_inclusive=False) == 0.0
    assert checks.check_float("offset", -1e300) == -1e300  # unbounded, but finite


@pytest.mark.parametrize(
    ("value", "kind", "shown"),
    [
        (0, ParameterError, "0"),
        (0.0, ParameterError, "0.0"),
        (-1e-9, ParameterError, "-1e-09"),
        (float("nan"), ParameterError, "nan"),
        (float("inf"), ParameterError, "inf"),
        (np.float64("nan"), ParameterError, "np.float64(nan)"),
        ("0.1", ArgumentTypeError, "'0.1'"),
        (None, ArgumentTypeError, "None"),
        (True, ArgumentTypeError, "True"),
    ],
)
def test_check_float_refusals(value, kind, shown):
    error = refusal(lambda: checks.check_float("lr", value, minimum=0, min_inclusive=False), kind)
    assert str(error) == f"lr must be a finite number > 0, got {shown}"
    assert error.param == "lr"


def test_check_float_open_and_closed_upper_bounds():
    assert checks.check_float("p", 1.0, minimum=0, maximum=1) == 1.0
    error = refusal(lambda: checks.check_float("p", 1.0, minimum=0, maximum=1, max_inclusive=False))
    assert str(error) == "p must be a finite number in [0, 1), got 1.0"


def test_check_choice_accepts_a_choice_and_suggests_close_ones():
    assert checks.check_choice("optimizer", "sgd", ["adamw", "sgd"]) == "sgd"
    error = refusal(lambda: checks.check_choice("optimizer", "adam", ("adamw", "sgd")))
    assert str(error) == "optimizer must be one of adamw, sgd; got 'adam' (did you mean 'adamw'?)"
    assert error.param == "optimizer"
    error = refusal(lambda: checks.check_choice("schedule", "linear", ("cosine", "constant", "step")))
    assert str(error) == "schedule must be one of cosine, constant, step; got 'linear'"


def test_choice_error_is_the_error_check_choice_raises():
    error = checks.choice_error("mode", "zero", ("zeros", "reflect"))
    assert type(error) is ParameterError and error.param == "mode"
    assert str(error) == "mode must be one of zeros, reflect; got 'zero' (did you mean 'zeros'?)"
    assert type(checks.choice_error("mode", 0, ("zeros",))) is ArgumentTypeError


def test_check_choice_refuses_a_wrong_type_and_equal_values_of_another_type():
    error = refusal(lambda: checks.check_choice("padding_mode", 0, ("zeros", "reflect")), ArgumentTypeError)
    assert str(error) == "padding_mode must be one of zeros, reflect; got 0"
    # True == 1, but True is not the choice 1.
    error = refusal(lambda: checks.check_choice("level", True, (0, 1, 2)))
    assert str(error) == "level must be one of 0, 1, 2; got True"
    assert checks.check_choice("level", 1, (0, 1, 2)) == 1


def test_check_int_sequence_normalises_to_a_tuple_of_ints():
    assert checks.check_int_sequence("widths", [8, np.int32(16)], lengths=2) == (8, 16)
    assert checks.check_int_sequence("batch_sizes", (1, 4, 8)) == (1, 4, 8)
    assert checks.check_int_sequence("sizes", np.array([3, 5])) == (3, 5)
    assert checks.check_int_sequence("offsets", [0, 2], minimum=0, maximum=2) == (0, 2)


@pytest.mark.parametrize(
    ("value", "kwargs", "kind", "message"),
    [
        ([8, 8], {"lengths": 4}, ParameterError, "widths must be 4 positive integers, got [8, 8]"),
        ("8888", {"lengths": 4}, ArgumentTypeError, "widths must be 4 positive integers, got '8888'"),
        (8, {}, ArgumentTypeError, "widths must be one or more positive integers, got 8"),
        ((), {}, ParameterError, "widths must be one or more positive integers, got ()"),
        (
            [8, 0, 8],
            {"lengths": 3, "maximum": 65_536},
            ParameterError,
            "widths must be 3 integers in [1, 65,536], got 0 in [8, 0, 8]",
        ),
        (
            [8, 16.0],
            {"lengths": 2, "maximum": 65_536},
            ArgumentTypeError,
            "widths must be 2 integers in [1, 65,536], got 16.0 in [8, 16.0]",
        ),
        (
            (1, 2),
            {"lengths": (3, 4, 5)},
            ParameterError,
            "widths must be 3, 4 or 5 positive integers, got (1, 2)",
        ),
        (
            [4, -1],
            {"minimum": 0, "meaning": "left, right"},
            ParameterError,
            "widths must be one or more non-negative integers (left, right), got -1 in [4, -1]",
        ),
    ],
)
def test_check_int_sequence_refusals(value, kwargs, kind, message):
    error = refusal(lambda: checks.check_int_sequence("widths", value, **kwargs), kind)
    assert str(error) == message
    assert error.param == "widths"


def test_image_size_is_three_positive_integers():
    assert checks.check_image_size("input_size", [3, 28, np.int64(28)]) == (3, 28, 28)
    error = refusal(lambda: checks.check_image_size("input_size", (28, 28)))
    assert str(error) == "input_size must be 3 positive integers (channels, height, width), got (28, 28)"
    error = refusal(lambda: checks.check_image_size("input_size", (1, 3, 28, 28)))
    assert (
        str(error) == "input_size must be 3 positive integers (channels, height, width), got (1, 3, 28, 28)"
    )
    error = refusal(lambda: checks.check_image_size("size", (3, 0, 28)))
    assert str(error) == "size must be 3 positive integers (channels, height, width), got 0 in (3, 0, 28)"
    assert error.param == "size"


def test_input_size_is_three_or_four_positive_integers():
    assert checks.check_input_size("input_size", (3, 96, 96)) == (3, 96, 96)
    assert checks.check_input_size("input_size", [2, 3, 96, 96]) == (2, 3, 96, 96)
    expected = "input_size must be 3 or 4 positive integers ([batch,] channels, height, width), got "
    for value, shown in (
        ((96, 96), "(96, 96)"),
        ((1, 1, 3, 96, 96), "(1, 1, 3, 96, 96)"),
        ((0, 3, 9), "0 in (0, 3, 9)"),
    ):
        error = refusal(lambda value=value: checks.check_input_size("input_size", value))
        assert str(error) == expected + shown
    error = refusal(lambda: checks.check_input_size("input_size", "3,96,96"), ArgumentTypeError)
    assert str(error) == expected + "'3,96,96'"


def test_check_finite_json_names_where_the_bad_number_sits():
    kwargs = {"width_mult": 0.5, "widths": [4, 8], "nested": {"a": 1.0}}
    assert checks.check_finite_json("model_kwargs", kwargs) is kwargs
    for value, message in (
        ({"width_mult": float("inf")}, "model_kwargs['width_mult'] must hold finite numbers, got inf"),
        ({"widths": [4, float("nan")]}, "model_kwargs['widths'] must hold finite numbers, got nan"),
        ({"a": {"b": (float("-inf"),)}}, "model_kwargs['a']['b'] must hold finite numbers, got -inf"),
    ):
        error = refusal(lambda value=value: checks.check_finite_json("model_kwargs", value))
        assert str(error) == message
        assert error.param == "model_kwargs"


def test_bounds_equal_to_each_other_are_one_allowed_value():
    # minimum == maximum is a valid (if narrow) range, not bounds written the wrong way round.
    assert checks.describe_integer(3, 3) == "an integer in [3, 3]"
    assert checks.check_int("groups", 3, minimum=3, maximum=3) == 3
    assert checks.describe_float(0.5, 0.5) == "a finite number in [0.5, 0.5]"


def test_describe_float_checks_both_bounds_and_names_the_bad_one():
    with pytest.raises(ValueError, match=r"^minimum must be a finite number or None, got -inf$"):
        checks.describe_float(float("-inf"))
    with pytest.raises(ValueError, match=r"^minimum must be a finite number or None, got nan$"):
        checks.describe_float(float("nan"), 1.0)
    with pytest.raises(ValueError, match=r"^minimum must be <= maximum, got 2 > 1$"):
        checks.describe_float(2, 1)
    with pytest.raises(ValueError, match=r"^minimum must be <= maximum, got 1.5 > -1.5$"):
        checks.check_float("lr", 0.0, minimum=1.5, maximum=-1.5)


def test_check_int_accepts_its_upper_bound_and_refuses_the_next():
    assert checks.check_int("depth", 10, maximum=10) == 10
    assert checks.check_int("depth", 8, minimum=1, maximum=8) == 8
    error = refusal(lambda: checks.check_int("depth", 9, minimum=1, maximum=8))
    assert str(error) == "depth must be an integer in [1, 8], got 9"


def test_check_float_closed_bounds_are_written_closed_in_the_refusal():
    error = refusal(lambda: checks.check_float("p", 1.5, minimum=0, maximum=1))
    assert str(error) == "p must be a finite number in [0, 1], got 1.5"
    error = refusal(lambda: checks.check_float("scale", 2.5, maximum=2))
    assert str(error) == "scale must be a finite number <= 2, got 2.5"
    error = refusal(lambda: checks.check_float("scale", 2.0, maximum=2, max_inclusive=False))
    assert str(error) == "scale must be a finite number < 2, got 2.0"


def test_check_int_sequence_refuses_an_item_above_its_maximum():
    assert checks.check_int_sequence("widths", [8, 65_536, 1], lengths=3, maximum=65_536) == (8, 65_536, 1)
    error = refusal(lambda: checks.check_int_sequence("widths", [8, 65_537, 8], lengths=3, maximum=65_536))
    assert str(error) == "widths must be 3 integers in [1, 65,536], got 65537 in [8, 65537, 8]"
    assert error.param == "widths"


def test_check_choice_suggests_at_most_three_close_matches_joined_by_or():
    # "conv" against each "convN": ratio 2 * 4 / 9 = 0.89 >= 0.6, all equal, so difflib keeps the three
    # largest strings (ties break on the name, descending): conv4, conv3, conv2; conv1 is left out.
    error = refusal(lambda: checks.check_choice("block", "conv", ("conv1", "conv2", "conv3", "conv4")))
    assert str(error) == (
        "block must be one of conv1, conv2, conv3, conv4; got 'conv' (did you mean 'conv4' or 'conv3' or 'conv2'?)"
    )
    assert error.param == "block"


def test_a_wrong_type_among_named_choices_carries_the_parameter_name():
    error = refusal(lambda: checks.check_choice("padding_mode", 0, ("zeros", "reflect")), ArgumentTypeError)
    assert error.param == "padding_mode"
    assert checks.choice_error("mode", 0, ("zeros",)).param == "mode"
