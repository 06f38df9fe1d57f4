"""Integer convolution arithmetic against PyTorch's layers and hand-worked values."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st
from torch import nn

from sepconv import arithmetic
from sepconv.arithmetic import ReceptiveField


@given(
    size=st.integers(1, 40),
    kernel_size=st.integers(1, 7),
    stride=st.integers(1, 4),
    padding=st.integers(0, 3),
    dilation=st.integers(1, 3),
)
def test_conv_output_size_matches_torch(size, kernel_size, stride, padding, dilation):
    span = size + 2 * padding - dilation * (kernel_size - 1) - 1
    if span < 0:
        with pytest.raises(ValueError, match="kernel_size"):
            arithmetic.conv_output_size(size, kernel_size, stride, padding, dilation)
        return
    conv = nn.Conv2d(1, 1, kernel_size, stride, padding, dilation)
    expected = conv(torch.zeros(1, 1, size, 1 + 2 * 0 + dilation * (kernel_size - 1))).shape[-2]
    assert arithmetic.conv_output_size(size, kernel_size, stride, padding, dilation) == expected


@given(
    size=st.integers(1, 12),
    kernel_size=st.integers(1, 5),
    stride=st.integers(1, 3),
    padding=st.integers(0, 4),
    dilation=st.integers(1, 2),
    extra=st.integers(0, 2),
)
# Both outcomes on every run, whatever else is drawn: 1 px, k=1, p=1 gives 0 - 2 + 0 + 0 + 1 = -1 (refused);
# 4 px, k=3, s=2, p=1, output_padding 1 gives 6 - 2 + 2 + 1 + 1 = 8.
@example(size=1, kernel_size=1, stride=1, padding=1, dilation=1, extra=0)
@example(size=4, kernel_size=3, stride=2, padding=1, dilation=1, extra=1)
def test_conv_transpose_output_size_matches_torch(size, kernel_size, stride, padding, dilation, extra):
    # Every drawn case is checked: where the padding leaves no output, both PyTorch and sepconv refuse.
    output_padding = extra % max(stride, dilation)
    conv = nn.ConvTranspose2d(1, 1, kernel_size, stride, padding, output_padding, dilation=dilation)
    by_hand = (size - 1) * stride - 2 * padding + dilation * (kernel_size - 1) + output_padding + 1
    if by_hand < 1:
        with pytest.raises(RuntimeError):
            conv(torch.zeros(1, 1, size, size))
        with pytest.raises(ValueError, match=f"padding={padding} leaves no output"):
            arithmetic.conv_transpose_output_size(
                size, kernel_size, stride, padding, output_padding, dilation
            )
        return
    expected = conv(torch.zeros(1, 1, size, size)).shape[-1]
    assert expected == by_hand
    got = arithmetic.conv_transpose_output_size(size, kernel_size, stride, padding, output_padding, dilation)
    assert got == expected


@given(
    size=st.integers(1, 50),
    kernel_size=st.integers(1, 7),
    stride=st.integers(1, 4),
    dilation=st.integers(1, 3),
)
def test_same_padding_gives_ceil_output(size, kernel_size, stride, dilation):
    before, after = arithmetic.same_padding(size, kernel_size, stride, dilation)
    assert 0 <= after - before <= 1
    padded = size + before + after
    out = (padded - dilation * (kernel_size - 1) - 1) // stride + 1
    assert out == math.ceil(size / stride)


def test_same_padding_hand_values():
    # total = max((ceil(i/s) - 1)s + (k - 1)d + 1 - i, 0)
    assert arithmetic.same_padding(224, 3, 2) == (0, 1)  # (111*2 + 3 - 224) = 1
    assert arithmetic.same_padding(225, 3, 2) == (1, 1)  # (112*2 + 3 - 225) = 2
    assert arithmetic.same_padding(7, 5, 1, 2) == (4, 4)  # (6 + 9 - 7) = 8
    assert arithmetic.same_padding(4, 1, 3) == (0, 0)


def test_params_and_macs_by_hand():
    # standard 3x3, 32 -> 64 at 56x56: 3*3*32*64 = 18,432 weights, each applied 56*56 times
    assert arithmetic.conv_params(32, 64, 3, bias=False) == 18_432
    assert arithmetic.conv_macs(32, 64, 3, 56) == 18_432 * 56 * 56
    assert arithmetic.conv_macs(32, 64, 3, (56, 28), groups=4, batch_size=2) == 2 * 18_432 // 4 * 56 * 28
    # depthwise with multiplier 2: 32*2 filters of 3x3 (+64 biases)
    assert arithmetic.depthwise_params(32, 3, depth_multiplier=2) == 64 * 9 + 64
    assert arithmetic.pointwise_params(64, 128, groups=2, bias=False) == 64 * 128 // 2
    assert arithmetic.separable_macs(32, 64, 3, 56) == (32 * 9 + 32 * 64) * 56 * 56
    assert arithmetic.conv_transpose_macs(4, 8, 3, 5, groups=2) == 4 * 25 * 9 * 4


def test_separable_cost_ratio_equals_formula_and_counts():
    ratio = arithmetic.separable_cost_ratio(64, 3)
    # Python floats (float64): a division or two of integers is within a few ulps (~1e-16), so approx's
    # default rel=1e-6 is ample, while a wrong formula (e.g. 1/64 + 1/3) is off by far more.
    assert ratio == pytest.approx(1 / 64 + 1 / 9)
    assert arithmetic.separable_macs(32, 64, 3, 10) / arithmetic.conv_macs(32, 64, 3, 10) == pytest.approx(
        ratio
    )


def _measured(layer: nn.Module, input_shape: tuple[int, ...]) -> tuple[int, int, tuple[int, ...]]:
    """(parameters, MACs, output H x W) of ``layer`` as PyTorch counts them: its tensors, its flop counter."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        output = layer(torch.zeros(1, *input_shape))
    return (
        sum(p.numel() for p in layer.parameters()),
        counter.get_total_flops() // 2,
        tuple(output.shape[-2:]),
    )


@pytest.mark.parametrize(
    (
        "in_channels",
        "out_channels",
        "kernel_size",
        "input_size",
        "stride",
        "padding",
        "dilation",
        "multiplier",
    ),
    [
        (16, 32, 3, (10, 10), 1, "same", 1, 1),
        (6, 12, 5, (17, 9), 2, "same", 2, 2),
        (4, 4, 3, (12, 11), 2, "valid", 1, 1),
        (3, 10, 3, (20, 20), 1, 1, 3, 3),
    ],
)
def test_convolution_costs_match_torch_layers(
    in_channels, out_channels, kernel_size, input_size, stride, padding, dilation, multiplier
):
    from sepconv.layers import SeparableConv2d

    costs = arithmetic.convolution_costs(
        in_channels,
        out_channels,
        kernel_size,
        input_size,
        stride=stride,
        padding=padding,
        dilation=dilation,
        depth_multiplier=multiplier,
    )
    if padding == "same":
        # TensorFlow's 'same': ceil(size / stride) outputs; an unpadded conv reads this much input for them
        expected_output = tuple(math.ceil(size / stride) for size in input_size)
        conv_input = tuple((size - 1) * stride + dilation * (kernel_size - 1) + 1 for size in expected_output)
        conv_padding = 0
    else:
        conv_input, conv_padding = input_size, 0 if padding == "valid" else padding
    groups = [g for g in range(1, in_channels + 1) if in_channels % g == 0 and out_channels % g == 0]
    assert [row.groups for row in costs.rows] == [*groups, None]
    for row in costs.rows[:-1]:
        conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, conv_padding, dilation, row.groups)
        assert (row.params, row.macs, costs.output_size) == _measured(conv, (in_channels, *conv_input))
    separable = SeparableConv2d(
        in_channels, out_channels, kernel_size, stride, padding, dilation, depth_multiplier=multiplier
    )
    row = costs.rows[-1]
    assert (row.kind, row.params, row.macs, costs.output_size) == (
        "separable",
        *_measured(separable, (in_channels, *input_size)),
    )
    standard = costs.rows[0]
    assert standard.kind == "standard" and standard.params_ratio == standard.macs_ratio == 1.0
    assert (row.params_ratio, row.macs_ratio) == (row.params / standard.params, row.macs / standard.macs)
    assert costs.separable_ratio_formula == pytest.approx(row.macs_ratio)


def test_convolution_costs_names_each_form_and_keeps_the_geometry():
    costs = arithmetic.convolution_costs(16, 32, 3, 8, padding=2, bias=False)
    assert [(row.kind, row.groups) for row in costs.rows] == [
        ("standard", 1),
        ("grouped", 2),
        ("grouped", 4),
        ("grouped", 8),
        ("depthwise x2", 16),
        ("separable", None),
    ]
    assert arithmetic.convolution_costs(8, 8, 3, 8).rows[-2].kind == "depthwise"
    # bias=False reaches the separable row too: depthwise 3*3*16 + pointwise 16*32, no bias = 656
    assert costs.rows[-1].params == 144 + 512
    assert (costs.input_size, costs.output_size, costs.padding) == ((8, 8), (10, 10), 2)
    assert costs.to_dict()["padding"] == "2" and costs.to_dict()["rows"][0] == {
        "kind": "standard",
        "groups": 1,
        "params": 4608,
        "macs": 4608 * 100,
        "params_ratio": 1.0,
        "macs_ratio": 1.0,
    }
    # every other key of `sepconv calc --json`, by hand: 8 + 2*2 - 3 + 1 = 10 pixels out; the separable
    # ratio formula 1/out_channels + 1/k^2 = 1/32 + 1/9
    document = costs.to_dict()
    del document["rows"]
    assert document == {
        "in_channels": 16,
        "out_channels": 32,
        "kernel_size": 3,
        "stride": 1,
        "padding": "2",
        "dilation": 1,
        "depth_multiplier": 1,
        "input_size": [8, 8],
        "output_size": [10, 10],
        "separable_ratio_formula": pytest.approx(1 / 32 + 1 / 9, rel=1e-12),
    }
    with pytest.raises(ValueError, match=r"^padding must be one of same, valid; got 'full'$"):
        arithmetic.convolution_costs(16, 32, 3, 8, padding="full")


def test_make_divisible_matches_torchvision():
    from torchvision.models._utils import _make_divisible

    for value in [3, 8, 10, 17, 24.0, 32 * 0.35, 32 * 1.4, 96 * 0.75, 1280 * 1.3, 160 * 0.5]:
        for divisor in (4, 8):
            assert arithmetic.make_divisible(value, divisor) == _make_divisible(value, divisor)


def test_valid_groups_and_errors():
    assert arithmetic.valid_groups(12, 18) == [1, 2, 3, 6]
    with pytest.raises(
        ValueError,
        match=r"groups=4 must divide in_channels=12 and out_channels=18; valid values: \[1, 2, 3, 6\]",
    ):
        arithmetic.check_groups(12, 18, 4)
    with pytest.raises(ValueError, match="stride must be a positive integer, got 0"):
        arithmetic.conv_output_size(8, 3, stride=0)
    with pytest.raises(ValueError, match="padding must be a non-negative integer, got -1"):
        arithmetic.conv_output_size(8, 3, padding=-1)
    with pytest.raises(ValueError, match="output_padding=2 must be smaller than stride=2 or dilation=1"):
        arithmetic.conv_transpose_output_size(4, 3, stride=2, output_padding=2)


def test_receptive_field_recurrence_by_hand():
    field = arithmetic.ReceptiveField()
    # Two 3x3 convs: 3 then 5 (the lesson's "why 5 and not 6": each layer adds k - 1 = 2 pixels).
    field = arithmetic.receptive_field_step(field, 3)
    assert field.size == 3
    field = arithmetic.receptive_field_step(field, 3)
    assert field.size == 5
    # conv 7x7/2 pad 3, then maxpool 3x3/2 pad 1 (ResNet stem): r = 7 + 2*2 = 11, jump 4, start 0.
    stem = arithmetic.receptive_field_step(arithmetic.ReceptiveField(), 7, stride=2, padding=3)
    stem = arithmetic.receptive_field_step(stem, 3, stride=2, padding=1)
    assert (stem.size, stem.stride, stem.start) == (11, 4, 0.0)
    # dilated 3x3 (d=2) sees 5 pixels.
    assert arithmetic.receptive_field_step(arithmetic.ReceptiveField(), 3, dilation=2).size == 5


def test_receptive_field_start_by_hand():
    # start_out = start_in + ((k_eff - 1)/2 - p) * j_in: the centre of the first unit, in input pixels.
    padded = arithmetic.receptive_field_step(arithmetic.ReceptiveField(), 3, padding=2)
    assert (padded.size, padded.stride, padded.start) == (3, 1, -1.0)  # 1 - 2: outside the image
    # after a jump of 2 and start 1: 5x5 dilated 2 (k_eff 9), stride 3, padding 1:
    # size 3 + 8*2 = 19, jump 6, start 1 + (4 - 1)*2 = 7
    field = arithmetic.ReceptiveField(size=3, stride=2, start=1.0)
    step = arithmetic.receptive_field_step(field, 5, stride=3, padding=1, dilation=2)
    assert (step.size, step.stride, step.start) == (19, 6, 7.0)
    # an even kernel puts the centre between two pixels: 2x2 stride 2, no padding
    assert arithmetic.receptive_field_step(arithmetic.ReceptiveField(), 2, stride=2).start == 0.5


# ---------------------------------------------------------------------------------------------------
# exact integer results, by hand (a float or a rounded count would fail)
# ---------------------------------------------------------------------------------------------------


def test_conv_transpose_macs_is_an_exact_int():
    # groups=1, batch_size=1 by default: 4 * 5*5 * 3*3 * (6/1) = 4 * 25 * 9 * 6 = 5400 (groups 2: 2700)
    macs = arithmetic.conv_transpose_macs(4, 6, 3, input_size=5)
    assert macs == 5400
    assert type(macs) is int
    # Non-square, grouped, batched: 2 * 6 * (3*4) * (1*3) * (4/2) = 2 * 6 * 12 * 3 * 2 = 864
    macs = arithmetic.conv_transpose_macs(6, 4, (1, 3), input_size=(3, 4), groups=2, batch_size=2)
    assert macs == 864
    assert type(macs) is int


def test_separable_params_by_hand():
    # depthwise 3*3*16 (no bias) + pointwise 16*32 + 32 = 144 + 544 = 688
    assert arithmetic.separable_params(16, 32, 3) == 688
    # depth_multiplier=2: hidden 32; depthwise 3*3*1*32 = 288 (no bias) + pointwise 32*32 + 32 = 1056 -> 1344
    assert arithmetic.separable_params(16, 32, 3, depth_multiplier=2) == 1344
    # bias=False drops only the pointwise bias: 144 + 512 = 656
    assert arithmetic.separable_params(16, 32, 3, bias=False) == 656


def test_separable_macs_by_hand():
    # hidden = 8*2 = 16; depthwise: 3 * 16 * 10*10 * 3*3 * (8/8) = 43200;
    # pointwise: 3 * 16 * 10*10 * 1 * 16 = 76800; total 120000 = 3*(8*2*9*100 + 16*16*100)
    macs = arithmetic.separable_macs(8, 16, 3, 10, depth_multiplier=2, batch_size=3)
    assert macs == 120000
    assert type(macs) is int
    # Defaults (multiplier 1, batch 1): 8*100*9 + 16*100*8 = 7200 + 12800 = 20000
    assert arithmetic.separable_macs(8, 16, 3, 10) == 20000


# ---------------------------------------------------------------------------------------------------
# make_divisible's rounding edges
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        # 44 is half-way between 40 and 48: int(44 + 8/2) // 8 * 8 = 48 (a tie rounds up)
        ((44, 8), 48),
        # 43 rounds down: int(47) // 8 * 8 = 40, and 40 >= 0.9*43 = 38.7 keeps it
        ((43, 8), 40),
        # int(10 + 4.5) // 9 * 9 = 9, and 9 is exactly 90% of 10: not "below 90%", so kept
        ((10, 9), 9),
        # int(100 + 16) // 32 * 32 = 96, and 96 >= 0.9*100 = 90 keeps it
        ((100, 32), 96),
        # int(11 + 5) // 10 * 10 = 10, and 10 >= 0.9*11 = 9.9 keeps it
        ((11, 10), 10),
        # int(11.9 + 4) // 8 * 8 = 8 < 0.9*11.9 = 10.71: one divisor more, 16
        ((11.9, 8), 16),
    ],
)
def test_make_divisible_rounding(args, expected):
    assert arithmetic.make_divisible(*args) == expected


def test_make_divisible_min_value():
    # min_value=24 is the floor: max(24, int(10+4)//8*8 = 8) = 24; 24 >= 9 kept. (With the floor
    # taken from divisor instead it would be 8, then 8 < 9 -> 16.)
    assert arithmetic.make_divisible(10, 8, min_value=24) == 24
    # min_value=16: max(16, 8) = 16.
    assert arithmetic.make_divisible(10, 8, min_value=16) == 16
    # A floor below the rounded value changes nothing: int(100+4)//8*8 = 104
    assert arithmetic.make_divisible(100, 8, min_value=16) == 104
    # A floor that is no multiple of the divisor: int(3 + 4) // 8 * 8 = 0 -> max(1, 0) = 1, and
    # 1 < 0.9*3 = 2.7 -> 1 + 8 = 9
    assert arithmetic.make_divisible(3, 8, min_value=1) == 9


# ---------------------------------------------------------------------------------------------------
# receptive_field_step's start (and size, stride) against a brute-force walk over pixels
# ---------------------------------------------------------------------------------------------------


def _brute_force_field(layers):
    """Receptive field of units 0 and 1 of the last layer, by listing the input pixels they reach.

    An output unit j of a layer (k, s, p, d) reads the units j*s - p + i*d, i < k, of the layer below
    (negative indices are padding, kept as coordinates). Pixel i of the input has centre i.
    """

    def pixels(unit, depth):
        if depth == 0:
            return {unit}
        k, s, p, d = layers[depth - 1]
        return set().union(*(pixels(unit * s - p + i * d, depth - 1) for i in range(k)))

    first, second = pixels(0, len(layers)), pixels(1, len(layers))
    size = max(first) - min(first) + 1
    start = (min(first) + max(first)) / 2
    return ReceptiveField(size=size, stride=(min(second) + max(second)) / 2 - start, start=start)


def _recurrence(layers):
    field = ReceptiveField()
    for k, s, p, d in layers:
        field = arithmetic.receptive_field_step(field, k, stride=s, padding=p, dilation=d)
    return field


def test_receptive_field_step_with_a_start_by_hand():
    # r = 3 + (3-1)*2 = 7; j = 2*2 = 4; start = 1 + ((3-1)/2 - 0) * 2 = 3
    field = arithmetic.receptive_field_step(
        ReceptiveField(size=3, stride=2, start=1.0), kernel_size=3, stride=2
    )
    assert field == ReceptiveField(size=7, stride=4, start=3.0)
    # That field is what a conv (k=3, s=2, p=0) gives from the input: the brute force agrees.
    assert _brute_force_field([(3, 2, 0, 1), (3, 2, 0, 1)]) == ReceptiveField(size=7, stride=4, start=3.0)
    # padding=0 is the default: with padding 2, start = 1 + (1 - 2) * 2 = -1
    padded = arithmetic.receptive_field_step(ReceptiveField(3, 2, 1.0), kernel_size=3, stride=2, padding=2)
    assert padded == ReceptiveField(size=7, stride=4, start=-1.0)


@pytest.mark.parametrize(
    "layers",
    [
        [(3, 2, 0, 1), (3, 2, 0, 1)],
        [(7, 2, 3, 1), (3, 2, 1, 1), (3, 1, 1, 1)],  # a ResNet stem and one block
        [(3, 1, 2, 2), (2, 2, 0, 1), (5, 3, 1, 2)],  # dilation, an even kernel, stride > 2
        [(1, 2, 0, 1), (3, 3, 4, 3), (2, 1, 1, 1)],
    ],
)
def test_receptive_field_matches_brute_force(layers):
    assert _recurrence(layers) == _brute_force_field(layers)
