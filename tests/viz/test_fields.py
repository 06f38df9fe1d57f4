"""Receptive-field maps: the gradient map and boxes against hand-worked numbers for convs with set weights."""

from collections import OrderedDict

import pytest
import torch
from torch import nn

from sepconv.viz.fields import PixelBox, draw_receptive_field, effective_receptive_field

# A kernel with distinct magnitudes and mixed signs, so a transposed or flipped window would show.
KERNEL = torch.tensor([[1.0, -2.0, 3.0], [-4.0, 5.0, -6.0], [7.0, -8.0, 9.0]])


def conv_with(weights: torch.Tensor, **kwargs) -> nn.Conv2d:
    """A bias-free conv whose weight (out x in x k x k) is set by hand."""
    conv = nn.Conv2d(weights.shape[1], weights.shape[0], weights.shape[-1], bias=False, **kwargs)
    with torch.no_grad():
        conv.weight.copy_(weights)
    return conv


def test_single_3x3_conv_is_exactly_its_window():
    # 2 input channels: KERNEL and 0.5 everywhere; d out[4,4] / d in[c, 3+i, 3+j] = w[0, c, i, j].
    model = nn.Sequential(conv_with(torch.stack([KERNEL, torch.full((3, 3), 0.5)]).unsqueeze(0), padding=1))
    field = effective_receptive_field(model, "0", torch.randn(2, 9, 9), position=(4, 4))
    expected = torch.zeros(9, 9)
    expected[3:6, 3:6] = torch.tensor([[1.5, 2.5, 3.5], [4.5, 5.5, 6.5], [7.5, 8.5, 9.5]])
    # Exact: each gradient entry is one weight (binary fractions), summed |.| of two exact numbers.
    torch.testing.assert_close(field.gradient, expected, rtol=0, atol=0)
    assert field.theoretical == PixelBox(3, 3, 3, 3)
    assert field.support == field.theoretical
    assert not field.extends_past_border
    assert field.output_size == (9, 9)


def test_channel_sum_and_one_channel():
    # Output channels KERNEL and ones: their sum's gradient is |KERNEL + 1|, channel 1 alone is all ones.
    model = nn.Sequential(conv_with(torch.stack([KERNEL, torch.ones(3, 3)]).unsqueeze(1), padding=1))
    inputs = torch.randn(1, 7, 7)
    summed = effective_receptive_field(model, "0", inputs, position=(3, 3))
    # Exact: integer sums of small integers.
    torch.testing.assert_close(
        summed.gradient[2:5, 2:5],
        torch.tensor([[2.0, 1.0, 4.0], [3.0, 6.0, 5.0], [8.0, 7.0, 10.0]]),
        rtol=0,
        atol=0,
    )
    one = effective_receptive_field(model, "0", inputs, position=(3, 3), channel=1)
    torch.testing.assert_close(one.gradient[2:5, 2:5], torch.ones(3, 3), rtol=0, atol=0)
    assert one.gradient.sum() == 9  # nothing outside the window


def test_two_stacked_3x3_convs_see_5x5():
    # All-ones kernels: the gradient counts the paths from each input pixel, the 3x3 ones kernel
    # convolved with itself: outer([1, 2, 3, 2, 1], [1, 2, 3, 2, 1]).
    model = nn.Sequential(
        conv_with(torch.ones(1, 1, 3, 3), padding=1), conv_with(torch.ones(1, 1, 3, 3), padding=1)
    )
    field = effective_receptive_field(model, "1", torch.randn(1, 11, 11), position=(5, 5))
    paths = torch.tensor([1.0, 2.0, 3.0, 2.0, 1.0])
    expected = torch.zeros(11, 11)
    expected[3:8, 3:8] = torch.outer(paths, paths)
    torch.testing.assert_close(field.gradient, expected, rtol=0, atol=0)  # exact: small integer counts
    assert field.theoretical == field.support == PixelBox(3, 3, 5, 5)
    assert field.receptive_field == (5, 5)


def test_stride_2_moves_the_field_by_2_per_output_step():
    # 3x3, stride 2, no padding on 9x9: output (y, x) reads input rows 2y..2y+2, columns 2x..2x+2.
    model = nn.Sequential(conv_with(torch.ones(1, 1, 3, 3), stride=2))
    inputs = torch.randn(1, 9, 9)
    for row in range(4):
        for column in range(4):
            field = effective_receptive_field(model, "0", inputs, position=(row, column))
            assert field.theoretical == field.support == PixelBox(2 * row, 2 * column, 3, 3)
    assert field.output_size == (4, 4) and field.effective_stride == (2, 2)


def test_field_past_the_border_is_clipped_to_the_gradient():
    model = nn.Sequential(conv_with(torch.ones(1, 1, 3, 3), padding=1))
    field = effective_receptive_field(model, "0", torch.randn(1, 7, 7), position=(0, 6))
    assert field.theoretical == PixelBox(-1, 5, 3, 3)  # centre (0, 6), one pixel of padding on two sides
    assert field.extends_past_border
    assert field.support == field.theoretical.clipped(7, 7) == PixelBox(0, 5, 2, 2)
    assert field.to_dict()["theoretical_box_clipped"] == {"top": 0, "left": 5, "height": 2, "width": 2}


def test_unit_is_taken_before_an_inplace_activation():
    # Bias -100 makes every pre-activation negative: if the unit were read after the in-place ReLU,
    # its gradient would be zero. The conv's own unit has gradient |KERNEL|.
    conv = conv_with(KERNEL.reshape(1, 1, 3, 3), padding=1)
    conv.bias = nn.Parameter(torch.tensor([-100.0]))
    model = nn.Sequential(conv, nn.ReLU(inplace=True)).train()
    field = effective_receptive_field(model, "0", torch.rand(1, 5, 5), position=(2, 2))
    torch.testing.assert_close(field.gradient[1:4, 1:4], KERNEL.abs(), rtol=0, atol=0)  # exact weights
    assert model.training and conv.weight.grad is None  # mode put back, parameters untouched
    relu = effective_receptive_field(model, "1", torch.rand(1, 5, 5), position=(2, 2))
    assert relu.support is None and relu.gradient.sum() == 0  # inactive unit: says so, no box


def test_the_theoretical_box_follows_the_summary_through_pooling():
    # conv 3x3 p1 then 2x2 max pool: pool output 0 covers conv outputs 0 and 1, i.e. input -1..2;
    # output 2 covers input 3..6 (centre 2 * 2 + 0.5 = 4.5, 4 pixels).
    model = nn.Sequential(conv_with(torch.ones(1, 1, 3, 3), padding=1), nn.MaxPool2d(2))
    field = effective_receptive_field(model, "1", torch.randn(1, 8, 8), position=(2, 0))
    assert field.theoretical == PixelBox(3, -1, 4, 4)
    assert field.start == (0.5, 0.5) and field.effective_stride == (2, 2)


@pytest.mark.parametrize(
    ("layer", "position", "channel", "message"),
    [
        ("convs", None, None, "did you mean conv?"),
        ("classifier", None, None, "units see the whole input"),
        ("conv", (8, 0), None, "inside the 8x8 output of layer 'conv'"),
        ("conv", (1, 2, 3), None, "position must be (row, column)"),
        ("conv", None, 4, "channel must be in [0, 3]"),
    ],
)
def test_errors_name_the_problem(layer, position, channel, message):
    layers = {"conv": nn.Conv2d(1, 4, 3, padding=1), "flat": nn.Flatten(), "classifier": nn.Linear(256, 2)}
    model = nn.Sequential(OrderedDict(layers))
    with pytest.raises(ValueError) as error:
        effective_receptive_field(model, layer, torch.randn(1, 8, 8), position=position, channel=channel)
    assert message in str(error.value)


def test_drawing_shows_both_boxes_and_units():
    from matplotlib.patches import Rectangle

    model = nn.Sequential(conv_with(torch.ones(1, 1, 3, 3), padding=1))
    field = effective_receptive_field(model, "0", torch.randn(1, 7, 7), position=(0, 3))
    figure = draw_receptive_field(field)
    image_axes, heat_axes = figure.axes[:2]
    boxes = [patch for patch in heat_axes.patches if isinstance(patch, Rectangle)]
    # Pixel (r, c) spans [r - 0.5, r + 0.5]: the clipped box rows 0..1, columns 2..4.
    assert [(box.get_x(), box.get_y(), box.get_width(), box.get_height()) for box in boxes] == [
        (1.5, -0.5, 3, 2),
        (1.5, -0.5, 3, 2),
    ]
    labels = [text.get_text() for text in image_axes.get_legend().get_texts()]
    assert labels == ["theoretical field 3x3 (clipped: extends past the border)", "non-zero gradient 2x3"]
    assert figure.axes[2].get_ylabel() == "|d unit / d input| (summed over channels)"
    assert "layer 0 at (row 0, column 3)" in figure.get_suptitle()
