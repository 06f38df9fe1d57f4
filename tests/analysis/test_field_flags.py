"""The flags a receptive field carries through a model (approximate, global context, whole input) and
the elementwise rule's shape cases, each on a small model where the right answer is worked by hand.

"approximate" starts at adaptive pooling with uneven windows (7 -> 3: windows of 3, 3 and 3 pixels
starting at 0, 2 and 4, so units are 2 or 2 apart only on average: 7/3) and must survive every later
operator, whichever rule handles it. Where a row claims the whole input, the gradient measurement of
``tests.helpers.fields`` confirms that every input pixel reaches the unit.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tests.helpers.fields import Op, all_pixels, positive, reached_pixels
from torch import nn

from sepconv.analysis import summarize
from sepconv.analysis.fields import FieldTracker, TensorField, input_field
from sepconv.arithmetic import ReceptiveField

aten = torch.ops.aten


def rows(model: nn.Module, shape: tuple[int, ...]):
    summary = summarize(model, inputs=torch.ones(shape, dtype=torch.float64))
    return summary, {row.name: row for row in summary.layers}


class Merge(nn.Module):
    """Two branches of the input meeting in an Op (its own row)."""

    def __init__(self, left: nn.Module, right: nn.Module, join) -> None:
        super().__init__()
        self.left, self.right, self.join = left, right, Op(lambda pair: join(*pair))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.join((self.left(x), self.right(x)))


def test_adding_an_approximate_path_to_an_exact_one_is_approximate():
    # uneven pooling 7 -> 3 (approximate) and a 3x3 stride-2 conv 7 -> 3 (exact) meet in an add
    model = Merge(nn.AdaptiveAvgPool2d(3), nn.Conv2d(1, 1, 3, stride=2), torch.add).double()
    _, by_name = rows(model, (1, 1, 7, 7))
    assert by_name["left"].notes == ("approximate",)
    assert by_name["right"].notes == ()
    assert "approximate" in by_name["join"].notes
    # both branches see 3 pixels per axis: the merged field is the larger of the two, 3
    assert by_name["join"].receptive_field == (3, 3)


@pytest.mark.parametrize(
    ("after", "name"),
    [
        (lambda g: torch.sigmoid(g), "a pointwise op on the whole input (elementwise rule)"),
        (lambda g: torch.sort(g, dim=1).values, "an op without a rule on the whole input"),
    ],
    ids=["sigmoid", "sort"],
)
def test_the_approximate_flag_survives_global_pooling_and_what_follows(after, name):
    model = nn.Sequential(nn.AdaptiveAvgPool2d(3), nn.AdaptiveAvgPool2d(1), Op(after)).double()
    summary, by_name = rows(model, (1, 2, 7, 7))
    row = by_name["2"]
    assert row.sees_whole_input and row.notes == ("approximate",), name
    assert summary.receptive_field_lost_at is None
    assert reached_pixels(model, (1, 2, 7, 7), (0, 0, 0, 0)) == all_pixels((1, 2, 7, 7))


def test_a_linear_layer_on_approximate_features_is_approximate():
    model = nn.Sequential(nn.AdaptiveAvgPool2d(3), nn.Flatten(), nn.Linear(9, 2)).double()
    _, by_name = rows(model, (1, 1, 7, 7))
    assert by_name["2"].sees_whole_input and by_name["2"].notes == ("approximate",)
    assert reached_pixels(model, (1, 1, 7, 7), (0, 0)) == all_pixels((1, 1, 7, 7))


def test_a_squeeze_excite_product_is_local_with_global_context():
    # y * sigmoid(gap(y)): each unit keeps y's 3x3 field and also depends on a summary of the image
    class SqueezeExcite(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 3, padding=1)
            self.gap = nn.AdaptiveAvgPool2d(1)
            self.scale = Op(lambda pair: pair[0] * torch.sigmoid(pair[1]))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            return self.scale((y, self.gap(y)))

    _, by_name = rows(SqueezeExcite().double(), (1, 2, 7, 7))
    row = by_name["scale"]
    assert (row.receptive_field, row.effective_stride, row.start) == ((3, 3), (1, 1), (0, 0))
    assert row.notes == ("global context",) and not row.sees_whole_input


def test_a_one_unit_local_map_broadcast_along_a_1d_sequence_adds_global_context():
    # (1, 2, 9) -> conv k=9 -> (1, 2, 1): a local field of 9, broadcast over the other branch's 9 units
    model = Merge(nn.Conv1d(2, 2, 3, padding=1), nn.Conv1d(2, 2, 9), torch.mul).double()
    _, by_name = rows(model, (1, 2, 9))
    assert by_name["right"].receptive_field == (9,) and not by_name["right"].sees_whole_input
    row = by_name["join"]
    assert (row.receptive_field, row.effective_stride, row.start) == ((3,), (1,), (0,))
    assert row.notes == ("global context",)


def test_a_map_selected_down_to_its_spatial_axes_keeps_its_field():
    # x[0, 0] is (5, 5): only spatial dims left; doubling it is still the conv's 3x3 field
    model = nn.Sequential(nn.Conv2d(1, 1, 3), Op(lambda x: x[0, 0] * 2)).double()
    _, by_name = rows(model, (1, 1, 7, 7))
    assert (by_name["1"].receptive_field, by_name["1"].effective_stride, by_name["1"].start) == (
        (3, 3),
        (1, 1),
        (1, 1),
    )


def test_a_one_dimensional_model_input_has_one_spatial_axis():
    model = positive(nn.Conv1d(2, 2, 3), nn.ReLU(), nn.Conv1d(2, 2, 3, stride=2))
    summary, by_name = rows(model, (1, 2, 11))
    assert by_name["0"].receptive_field == (3,) and by_name["2"].receptive_field == (5,)
    assert summary.receptive_field == (5,) and summary.effective_stride == (2,)
    assert input_field(torch.ones(1, 2, 11)) == TensorField(axes=(ReceptiveField(),))


def test_a_feature_vector_input_has_no_spatial_axis():
    # (batch, features): the ReLU's units have no spatial field at all, the linear layer sees everything
    _, by_name = rows(nn.Sequential(nn.ReLU(), nn.Linear(4, 3)).double(), (2, 4))
    assert by_name["0"].receptive_field is None and not by_name["0"].sees_whole_input
    assert by_name["1"].sees_whole_input
    assert input_field(torch.ones(2, 4)) == TensorField(axes=())


def test_a_value_independent_op_gives_no_field():
    # zeros_like depends on the shape only: its output sees no input pixel
    summary, by_name = rows(nn.Sequential(nn.Conv2d(1, 1, 3), Op(torch.zeros_like)).double(), (1, 1, 7, 7))
    assert by_name["1"].receptive_field is None and not by_name["1"].sees_whole_input
    assert by_name["1"].notes == () and summary.receptive_field_lost_at is None  # not "unknown" either


def test_a_mean_over_the_first_spatial_axis_sees_the_whole_input():
    # mean over the height of a (1, 2, 5, 5) map: every unit reaches every row (and 3 columns)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), Op(lambda x: x.mean(2))).double()
    _, by_name = rows(model, (1, 1, 7, 7))
    assert by_name["1"].sees_whole_input
    assert {row for row, _ in reached_pixels(model, (1, 1, 7, 7), (0, 0, 2))} == set(range(7))


def test_a_convolution_whose_weights_come_from_the_input_sees_the_whole_input():
    # a constant image convolved with weights computed from the global mean of the input
    class DynamicConv(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            weight = x.mean((2, 3)).reshape(1, 1, 1, 1).expand(1, 1, 3, 3)
            return F.conv2d(torch.ones(1, 1, 5, 5, dtype=x.dtype), weight)

    summary, by_name = rows(nn.Sequential(DynamicConv()), (1, 1, 7, 7))
    assert by_name["0"].sees_whole_input and summary.receptive_field_lost_at is None


def test_a_stride_one_transposed_convolution_widens_the_field_by_kernel_minus_one():
    # stride 1: every output unit gathers k = 3 input units, so the field is 1 + (3 - 1) * 1 = 3
    model = positive(nn.ConvTranspose2d(1, 1, 3))
    _, by_name = rows(model, (1, 1, 5, 5))
    assert by_name["0"].receptive_field == (3, 3) and by_name["0"].start == (-1, -1)
    reached = reached_pixels(model, (1, 1, 5, 5), (0, 0, 3, 3))  # output (7, 7), unit 3 centred on 2
    assert reached == {(row, column) for row in (1, 2, 3) for column in (1, 2, 3)}


def test_the_elementwise_rule_gives_plain_flags():
    # Fields are compared whole (the HTML report and JSON read them): flags are False, never None.
    tracker = FieldTracker()
    local = torch.ones(1, 2, 4, 4)
    tracker.set(local, TensorField(axes=(ReceptiveField(3, 1, 0),) * 2))
    # a (1, 2, 4, 4) map viewed as (1, 32) features: the layout is gone, nothing else is known
    assert tracker.propagate(aten.view.default, (local, [1, 32]), {}, local.view(1, 32)) == TensorField()
    whole = torch.ones(1, 2, 1, 1)
    tracker.set(whole, TensorField(whole_input=True))
    assert tracker.propagate(aten.sigmoid.default, (whole,), {}, torch.sigmoid(whole)) == TensorField(
        whole_input=True
    )


def test_a_selected_one_unit_map_broadcast_over_a_selected_map_adds_global_context():
    # a[0, 0] is (5, 5) with a 3x3 field; b[0, 0] is (1, 1) with a 7x7 field: only spatial dims left
    class Selected(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(1, 1, 3), nn.Conv2d(1, 1, 7)
            self.mul = Op(lambda pair: pair[0][0, 0] * pair[1][0, 0])

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.mul((self.a(x), self.b(x)))

    _, by_name = rows(Selected().double(), (1, 1, 7, 7))
    row = by_name["mul"]
    assert (row.receptive_field, row.start, row.notes) == ((3, 3), (1, 1), ("global context",))


def test_a_column_broadcast_across_its_own_map_loses_track():
    # m + m[:, :1]: unit (i, j) also reads column 0 of its row, which no local field describes
    model = positive(nn.Conv2d(1, 1, 3), Op(lambda m: m[0, 0] + m[0, 0][:, :1]))
    summary, by_name = rows(model, (1, 1, 7, 7))
    assert by_name["1"].notes == ("unknown",) and by_name["1"].receptive_field is None
    assert summary.receptive_field_lost_at == "aten.add in '1'"
    # the measurement: unit (0, 4) reaches input columns 4..6 (its own window) and 0..2 (column 0's),
    # a field with a hole at column 3 that no (size, stride, start) can describe
    assert {column for _, column in reached_pixels(model, (1, 1, 7, 7), (0, 4))} == {0, 1, 2, 4, 5, 6}


@pytest.mark.parametrize(
    ("pool", "start"),
    [
        (lambda x: F.max_pool2d(x, [3], [2]), 1),  # one number for both axes, given as a list
        (lambda x: F.avg_pool2d(x, [3], [2], [1]), 0),
    ],
    ids=["max_pool2d([3], [2])", "avg_pool2d([3], [2], [1])"],
)
def test_pooling_sizes_given_once_for_both_axes_apply_to_both(pool, start):
    _, by_name = rows(nn.Sequential(Op(pool)).double(), (1, 1, 9, 9))
    row = by_name["0"]
    assert (row.receptive_field, row.effective_stride, row.start) == ((3, 3), (2, 2), (start, start))
