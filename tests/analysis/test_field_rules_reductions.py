"""Softmax and reductions: the field rules against a gradient measurement.

The measurement is that of ``tests.helpers.fields``: float64, weights 1 (or other positive constants),
biases 0, an all-ones input, so an input pixel has a non-zero gradient for an output unit exactly when
the unit depends on it. A field rule can only say "local, of this size" or "whole input"; an operator
that mixes every position along one spatial axis (softmax or a sum over the width) is "whole input",
and the measurement shows why no local size would do: along that axis every unit reaches every pixel.
"""

from __future__ import annotations

import pytest
import torch
from tests.helpers.fields import (
    Op,
    all_pixels,
    assert_exact_per_unit,
    gradient_supports,
    positive,
    reached_pixels,
    reported_axes,
)
from torch import nn

from sepconv.analysis import summarize
from sepconv.analysis.fields import FieldTracker, TensorField, input_field
from sepconv.arithmetic import ReceptiveField

aten = torch.ops.aten


def row_of(model: nn.Module, shape: tuple[int, ...], layer: str):
    summary = summarize(model, inputs=torch.ones(shape, dtype=torch.float64))
    return next(row for row in summary.layers if row.name == layer)


def two_channel_conv() -> nn.Sequential:
    """A 3x3 'same' conv to 2 channels, channel 1 with weights 2: its two channels differ (z1 = 2 z0), so
    a softmax over them has a non-zero gradient (with equal channels it would be constant 1/2)."""
    model = positive(nn.Conv2d(1, 2, 3, padding=1))
    with torch.no_grad():
        model[0].weight[1].fill_(2.0)
    return model


# --- softmax -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("dim", [2, -1], ids=["height (first spatial axis)", "width, negative dim"])
def test_softmax_over_a_spatial_axis_sees_the_whole_input(dim):
    model = two_channel_conv()
    model.append(Op(lambda x: torch.softmax(x, dim)))
    shape = (1, 1, 7, 9)
    row = row_of(model, shape, "1")
    assert row.sees_whole_input and row.receptive_field is None
    # Measured: along the softmax axis every unit reaches every pixel of the input (no local size
    # would do); along the other axis the conv's 3 rows or columns. No cancellation: the gradient of
    # s_u is s_u (d_uj - s_j) summed over the <= 3 logits j a pixel feeds, and a sum of 3 softmax
    # probabilities out of 7 or 9 (all positive) is below 1, so the sum is never 0.
    axis = dim % 4 - 2
    length = shape[2 + axis]
    for support in gradient_supports(model, shape, "1", axis):
        assert support == (0, length - 1)
    across = gradient_supports(model, shape, "1", 1 - axis)
    assert all(last - first + 1 <= 3 for first, last in across)


def test_softmax_over_channels_keeps_the_field():
    model = two_channel_conv()
    model.append(Op(lambda x: torch.softmax(x, 1)))
    shape = (1, 1, 7, 9)
    axes, notes = reported_axes(model, shape, "1")
    assert axes == [(3, 1, 0), (3, 1, 0)] and notes == ()  # the conv's field, untouched
    # s0 = 1/(1 + e^{z1 - z0}) = 1/(1 + e^{z0}): its gradient is that of z0 times a non-zero factor.
    for axis, (size, jump, start) in enumerate(axes):
        assert_exact_per_unit(gradient_supports(model, shape, "1", axis), size, jump, start, shape[2 + axis])


def test_softmax_and_sums_that_see_the_whole_input_keep_the_approximate_flag():
    # Adaptive pooling 7x10 -> 3x4 has uneven windows: its field is approximate. Whatever sees the whole
    # input from there on is still marked approximate (the whole input, but reached through bounds).
    functions = (
        lambda x: torch.softmax(x, -1),
        lambda x: torch.log_softmax(x, 2),
        lambda x: x.sum(-1),  # dims given
        lambda x: x.sum(),  # no dims: every dim
    )
    for function in functions:
        model = positive(nn.AdaptiveAvgPool2d((3, 4)), Op(function))
        assert "approximate" in row_of(model, (1, 1, 7, 10), "0").notes
        row = row_of(model, (1, 1, 7, 10), "1")
        assert row.sees_whole_input and "approximate" in row.notes


def test_softmax_of_a_scalar_that_sees_the_whole_input():
    # A 0-d tensor has no axis to normalize over but itself: it sees the whole input, like the sum before.
    model = positive(nn.Conv2d(1, 1, 3), Op(lambda x: torch.softmax(x.sum(), 0) * x.sum()))
    shape = (1, 1, 6, 7)
    row = row_of(model, shape, "1")
    assert row.sees_whole_input and row.notes == ()
    assert reached_pixels(model, shape, ()) == all_pixels(shape)


# --- reductions --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reduce",
    [
        pytest.param(lambda x: x.mean(1, keepdim=True), id="mean(1, keepdim=True)"),
        pytest.param(lambda x: x.sum(1).unsqueeze(1), id="sum(1): dims the only argument after the input"),
        pytest.param(lambda x: x.amax(dim=1, keepdim=True), id="amax(dim=1, keepdim=True)"),
    ],
)
def test_reducing_the_channels_keeps_the_field(reduce):
    # mean / sum of positive channels: each unit depends on its conv window exactly. amax of z0 and
    # z1 = 2 z0 > 0 is z1: the same window.
    model = two_channel_conv()
    model.append(Op(reduce))
    shape = (1, 1, 7, 9)
    axes, notes = reported_axes(model, shape, "1")
    assert axes == [(3, 1, 0), (3, 1, 0)] and notes == ()
    for axis, (size, jump, start) in enumerate(axes):
        assert_exact_per_unit(gradient_supports(model, shape, "1", axis), size, jump, start, shape[2 + axis])


@pytest.mark.parametrize(
    ("reduce", "index", "whole_row"),
    [
        # sum over the width: output (1, 2, 7); unit (0, 0, 3) reaches all 9 columns of rows 2 to 4
        pytest.param(lambda x: x.sum(-1), (0, 0, 3), True, id="sum(-1)"),
        pytest.param(lambda x: x.sum(), (), False, id="sum()"),
        pytest.param(lambda x: x.sum(dim=[]), (), False, id="sum(dim=[]): every dim"),
        pytest.param(lambda x: x.mean((2, 3)), (0, 0), False, id="mean((2, 3))"),
        pytest.param(lambda x: x.var((2, 3), correction=0) + x.mean((2, 3)), (0, 0), False, id="var"),
    ],
)
def test_reducing_a_spatial_axis_sees_the_whole_input(reduce, index, whole_row):
    model = positive(nn.Conv2d(1, 2, 3, padding=1), Op(reduce))
    shape = (1, 1, 7, 9)
    row = row_of(model, shape, "1")
    assert row.sees_whole_input and row.receptive_field is None and row.notes == ()
    reached = reached_pixels(model, shape, index)
    if whole_row:
        assert reached == {(r, c) for r in (2, 3, 4) for c in range(9)}
    else:
        assert reached == all_pixels(shape)


@pytest.mark.parametrize(
    "reduce",
    [
        pytest.param(lambda x: x.amax(dim=(2, 3)), id="amax(dim=(2, 3))"),
        pytest.param(lambda x: x.max(dim=-1).values, id="max(dim=-1): one int dim"),
    ],
)
def test_a_spatial_maximum_sees_the_whole_input(reduce):
    # A max's gradient reaches the winner only: measure by raising one pixel at a time from 1 to 1000,
    # which then wins (a conv output of ones is at most 9). Every pixel along the reduced axes changes
    # output (0, 0, ...) of some row; for max(dim=-1) that is row 3's output, which pixels of rows
    # 2 to 4 reach through the 3x3 conv.
    model = positive(nn.Conv2d(1, 1, 3, padding=1), Op(reduce))
    shape = (1, 1, 7, 9)
    row = row_of(model, shape, "1")
    assert row.sees_whole_input and row.receptive_field is None
    images = torch.ones(63, 1, 7, 9, dtype=torch.float64)
    images.view(63, -1)[torch.arange(63), torch.arange(63)] = 1000.0
    with torch.no_grad():
        base = model(torch.ones(shape, dtype=torch.float64))
        middle = base[0].numel() // 2  # channel 0's only output, or its row 3 of 7
        changed = (model(images) != base).flatten(1)[:, middle]
    reached = {divmod(pixel, 9) for pixel in changed.nonzero().flatten().tolist()}
    if base.dim() == 2:
        assert reached == all_pixels(shape)
    else:  # the middle output of the 7 rows: row 3
        assert reached == {(r, c) for r in (2, 3, 4) for c in range(9)}


def test_reduction_dims_given_as_keywords_or_positions_agree():
    # The rule reads dims wherever the call carries them: positionally (as the dispatcher passes them)
    # or as the keyword ``dim`` (a caller of FieldTracker.propagate may pass them so). A bool second
    # argument (var(x, unbiased)) is not a dim: every dim is reduced.
    tracker = FieldTracker()
    x = torch.ones(1, 2, 5, 6)
    local = TensorField(axes=(ReceptiveField(3, 2, 1), ReceptiveField(5, 2, 2)))
    tracker.set(x, local)
    whole = TensorField(whole_input=True)
    calls = [
        (aten.sum.dim_IntList, (x, [1]), {}, x.sum(1), local),
        (aten.sum.dim_IntList, (x,), {"dim": [1]}, x.sum(1), local),
        (aten.mean.dim, (x,), {"dim": [1], "keepdim": True}, x.mean(1, keepdim=True), local),
        (aten.sum.dim_IntList, (x,), {"dim": [-1]}, x.sum(-1), whole),
        (aten.amax.default, (x,), {"dim": [2, 3]}, x.amax((2, 3)), whole),
        (aten.var.default, (x, False), {}, x.var(False), whole),
        (aten.sum.default, (x,), {}, x.sum(), whole),
    ]
    for func, args, kwargs, out, expected in calls:
        assert tracker.propagate(func, args, kwargs, out) == expected, (func, args, kwargs)
    # the reduction of a tensor without spatial axes (a flattened map) keeps no layout
    flat = torch.ones(2, 7)
    tracker.set(flat, TensorField())
    assert tracker.propagate(aten.sum.dim_IntList, (flat, [1]), {}, flat.sum(1)) == TensorField()
    assert input_field(x) == TensorField(axes=(ReceptiveField(),) * 2)
