"""Each receptive-field rule's ``start`` and ``size`` against a gradient measurement, unit by unit.

The measurement: all weights 1, biases 0, an all-ones float64 input, so no contribution cancels and an
input pixel has a non-zero gradient for an output unit exactly when the unit depends on it. Along one
axis, the first and last such pixel are the unit's measured field. sepconv reports, per axis, the size
r, the jump j and the centre of unit 0 (``start``); unit u is centred at start + u*j and its theoretical
field spans [start + u*j - (r-1)/2, start + u*j + (r-1)/2]. Padding puts part of a border unit's field
outside the image, where no gradient can be measured: there the measurement is the theory clipped to
[0, length-1], which the window rules below assert on every unit, borders included.
"""

from __future__ import annotations

import math

import pytest
import torch.nn.functional as F
from tests.helpers.fields import (
    Op,
    assert_exact_per_unit,
    gradient_supports,
    impulse_supports,
    positive,
    reported_axes,
    theory_interval,
)
from torch import nn

# --- sliding windows: convolution and pooling with padding, dilation, stride ------------------------

WINDOW_CASES = {
    # name: (layers, input shape, layer to read)
    "conv, padding 2 (start -1 before the image)": ([nn.Conv2d(1, 1, 3, padding=2)], (1, 1, 9, 11), "0"),
    "conv (3, 5), stride (2, 1), padding (1, 0)": (
        [nn.Conv2d(1, 1, (3, 5), stride=(2, 1), padding=(1, 0))],
        (1, 1, 13, 12),
        "0",
    ),
    # After a dense 3x3 (field 3, jump 1) a dilation of 2 leaves no gaps, so first/last clip cleanly.
    "conv, then dilated conv (2, 3) with stride and padding, then avg pool": (
        [
            nn.Conv2d(1, 1, 3, padding=1),
            nn.Conv2d(1, 1, (3, 5), stride=(2, 1), padding=(2, 3), dilation=(2, 2)),
            nn.AvgPool2d(3, stride=2, padding=1),
        ],
        (1, 1, 23, 21),
        "2",
    ),
    # nn.AvgPool2d's default stride reaches ATen as an empty list: the rule must read it as the kernel
    "avg pool (2, 3), default stride, padding (1, 1) after a strided conv": (
        [nn.Conv2d(1, 1, 3, stride=2, padding=1), nn.AvgPool2d((2, 3), padding=(1, 1))],
        (1, 1, 20, 25),
        "1",
    ),
    # zero padding (2 before, 1 after along the width, 3 before along the height) moves the first unit
    # back by what is added before it: the conv's start is 1 - 3 = -2 and 1 - 2 = -1
    "F.pad, then conv 3x3": ([Op(lambda x: F.pad(x, (2, 1, 3, 0))), nn.Conv2d(1, 1, 3)], (1, 1, 9, 10), "1"),
}


@pytest.mark.parametrize("case", list(WINDOW_CASES))
def test_sliding_windows_match_the_gradient_on_every_unit(case):
    layers, shape, layer = WINDOW_CASES[case]
    model = positive(*layers)
    axes, _ = reported_axes(model, shape, layer)
    for axis, (size, jump, start) in enumerate(axes):
        assert_exact_per_unit(
            gradient_supports(model, shape, layer, axis), size, jump, start, shape[2 + axis]
        )


def test_dilated_conv_on_the_input_matches_on_interior_units():
    # A dilated kernel straight on the input has gaps between its taps, so at a border the first tap
    # inside the image need not be pixel 0: compare the unclipped theory on interior units only.
    model = positive(nn.Conv2d(1, 1, (3, 4), stride=(2, 3), padding=(3, 2), dilation=(3, 2)))
    shape = (1, 1, 24, 26)
    axes, _ = reported_axes(model, shape, "0")
    assert axes == [(7, 2, 0), (7, 3, 1)]  # 1 + 2*3 = 7, start 3 - 3; 1 + 3*2 = 7, start 3 - 2
    for axis, (size, jump, start) in enumerate(axes):
        supports = gradient_supports(model, shape, "0", axis)
        interior = [
            unit
            for unit in range(len(supports))
            if theory_interval(size, jump, start, unit)[0] >= 0
            and theory_interval(size, jump, start, unit)[1] <= shape[2 + axis] - 1
        ]
        assert len(interior) >= 5
        for unit in interior:
            assert supports[unit] == theory_interval(size, jump, start, unit)


def test_dilated_max_pool_matches_the_impulse_response():
    # A max pool's gradient reaches the winning pixel only: the field is measured by raising one pixel.
    model = positive(
        nn.Conv2d(1, 1, 3, padding=1), nn.MaxPool2d((3, 2), stride=(2, 3), padding=1, dilation=2)
    )
    shape = (1, 1, 17, 19)
    axes, _ = reported_axes(model, shape, "1")
    assert [size for size, _, _ in axes] == [3 + 4 * 1, 3 + 2 * 1]
    for axis, (size, jump, start) in enumerate(axes):
        assert_exact_per_unit(impulse_supports(model, shape, "1", axis), size, jump, start, shape[2 + axis])


# --- transposed convolution --------------------------------------------------------------------------


def measured_centres(supports):
    return [None if support is None else (support[0] + support[1]) / 2 for support in supports]


TRANSPOSED_CASES = {
    # name: (layers, input shape, layer, taps symmetric per output residue)
    # k = 3, s = 2, p = 0: even units gather taps {0, 2}, odd ones {1}: both symmetric about the
    # kernel's centre, so every unit is centred exactly where the theory says; start (0 - 1)/2 = -0.5.
    "k3 s2 p0": ([nn.ConvTranspose2d(1, 1, 3, stride=2)], (1, 1, 9, 9), "0", True),
    # k = (5, 3), s = 2, p = (1, 0), output_padding (1, 0), after a stride-2 conv (jump 2, start 1):
    # start 1 + (1 - 2)/2 * 2 = 0 along the height, 1 + (0 - 1)/2 * 2 = 0 along the width.
    "conv s2, then k(5,3) s2 p(1,0) output_padding": (
        [
            nn.Conv2d(1, 1, 3, stride=2),
            nn.ConvTranspose2d(1, 1, (5, 3), stride=2, padding=(1, 0), output_padding=(1, 0)),
        ],
        (1, 1, 21, 19),
        "1",
        True,
    ),
    # k = 3, d = 2, s = 2, p = 1: units with o + p odd gather nothing (bias only); the others all three
    # taps, centred at (o + p)/2 - 1 = start + o/2 with start (1 - 2)/2 = -0.5.
    "k3 d2 s2 p1": (
        [nn.ConvTranspose2d(1, 1, 3, stride=2, padding=1, dilation=2)],
        (1, 1, 11, 11),
        "0",
        True,
    ),
    # k = 4, s = 2, p = 1 (the usual 2x upsampler): taps {1, 3} or {0, 2}, not symmetric about 1.5, so
    # units alternate a quarter pixel either side of the theory's centre (start (1 - 1.5)/2 = -0.25);
    # their mean over one period of s units is exact.
    "k4 s2 p1": ([nn.ConvTranspose2d(1, 1, 4, stride=2, padding=1)], (1, 1, 10, 10), "0", False),
}


@pytest.mark.parametrize("case", list(TRANSPOSED_CASES))
def test_transposed_convolution_start_and_size_match_the_gradient(case):
    layers, shape, layer, symmetric = TRANSPOSED_CASES[case]
    model = positive(*layers)
    axes, _ = reported_axes(model, shape, layer)
    for axis, (size, jump, start) in enumerate(axes):
        supports = gradient_supports(model, shape, layer, axis)
        length = shape[2 + axis]
        period = round(layers[-1].stride[axis])
        # Units whose theoretical window lies inside the image: nothing clipped.
        interior = [
            unit
            for unit in range(len(supports))
            if theory_interval(size, jump, start, unit)[0] >= 0
            and theory_interval(size, jump, start, unit)[1] <= length - 1
            and supports[unit] is not None
        ]
        assert len(interior) >= 2 * period
        extents = [supports[unit][1] - supports[unit][0] + 1 for unit in interior]
        assert max(extents) == size  # the size is the largest over the residues, reached
        centres = measured_centres(supports)
        if symmetric:
            for unit in interior:
                assert centres[unit] == start + unit * jump, (axis, unit)
        else:
            first = interior[0]
            window = range(first, first + period)
            assert all(unit in interior for unit in window)
            # exact in binary: quarters and halves
            assert sum(centres[unit] for unit in window) == sum(start + unit * jump for unit in window)
            assert all(abs(centres[unit] - (start + unit * jump)) == 0.25 for unit in interior)


def test_transposed_convolution_start_by_hand():
    # The values the gradient checks above rely on, worked out by hand: start_in + (p - (k-1)d/2)/s * j_in.
    assert (
        reported_axes(positive(nn.ConvTranspose2d(1, 1, 3, stride=2)), (1, 1, 9, 9), "0")[0]
        == [(2, 0.5, -0.5)] * 2
    )
    axes, _ = reported_axes(positive(nn.ConvTranspose2d(1, 1, 4, stride=2, padding=1)), (1, 1, 10, 10), "0")
    assert axes == [(2, 0.5, -0.25)] * 2


# --- transposed convolution: the size over output residues -----------------------------------------
#
# The kernel is (k, 1) with stride (s, 1) and dilation (d, 1): the height carries the case, the width
# stays the identity, so every column is a fine place to measure the height (with stride s along both
# axes some columns would see nothing at all).

TRANSPOSED = {
    # name: ((kernel, stride, dilation) along the height, size in input units worked by hand, jump)
    # o = 2i + 2t: even units gather taps 0, 1, 2 from inputs o/2 - t, three neighbours; odd ones none.
    "k3 s2 d2": ((3, 2, 2), 3, 0.5),
    # o = 3i + t, t in {0, 1}: one input (or none, o = 2 mod 3): the stride exceeds the kernel, size 1.
    "k2 s3": ((2, 3, 1), 1, 1 / 3),
    # o = 3i + 2t, t in {0, 1, 2}: 2t takes every residue mod 3 once, so one tap per unit: size 1.
    "k3 s3 d2": ((3, 3, 2), 1, 1 / 3),
    # o = 4i + 6t, t in {0, 1}: 0 and 6 differ mod 4, one tap per unit: size 1.
    "k2 s4 d6": ((2, 4, 6), 1, 0.25),
}


@pytest.mark.parametrize("case", list(TRANSPOSED))
def test_transposed_convolution_size_matches_the_gradient(case):
    (kernel, stride, dilation), size, jump = TRANSPOSED[case]
    model = positive(nn.ConvTranspose2d(1, 1, (kernel, 1), stride=(stride, 1), dilation=(dilation, 1)))
    shape = (1, 1, 6, 5)
    axes, _ = reported_axes(model, shape, "0")
    assert [(s, j) for s, j, _ in axes] == [(size, jump), (1, 1)]
    supports = [support for support in gradient_supports(model, shape, "0", 0) if support]
    # the widest unit, reached (no padding: no window is clipped by the image border)
    assert len(supports) >= 6 and max(last - first + 1 for first, last in supports) == size


# --- adaptive pooling with uneven windows -------------------------------------------------------------

ADAPTIVE_CASES = {
    # name: (layers, input shape, layer, expected (size, jump, start) per axis, worked by hand)
    # 7 -> 3: windows [floor(7i/3), ceil(7(i+1)/3)) = 0-2, 2-4, 4-6 (overlapping, all 3 wide);
    # 10 -> 4: 0-2, 2-4, 5-7, 7-9. Size 3, jump 7/3 and 10/4, unit 0 centred at pixel 1.
    "avg 7x10 -> 3x4": ([nn.AdaptiveAvgPool2d((3, 4))], (1, 1, 7, 10), "0", [(3, 7 / 3, 1), (3, 2.5, 1)]),
    # 5 -> 3: windows 0-1, 1-3, 3-4 (2, 3, 2 wide): size 3, start 0.5. 8 -> 4 is even: 2, 2, 0.5.
    "avg 5x8 -> 3x4": ([nn.AdaptiveAvgPool2d((3, 4))], (1, 1, 5, 8), "0", [(3, 5 / 3, 0.5), (2, 2, 0.5)]),
    # After a 3x3 conv (field 3): 9x12 -> 7x10 -> 3x4: size 3 + (3 - 1) = 5, start 1 + 1 = 2.
    "conv, then avg 7x10 -> 3x4": (
        [nn.Conv2d(1, 1, 3), nn.AdaptiveAvgPool2d((3, 4))],
        (1, 1, 9, 12),
        "1",
        [(5, 7 / 3, 2), (5, 2.5, 2)],
    ),
    # After a stride-2 conv (jump 2, start 1, field 3): 15x21 -> 7x10 -> 3x4: 3 + 2*2 = 7, 1 + 1*2 = 3.
    "strided conv, then avg 7x10 -> 3x4": (
        [nn.Conv2d(1, 1, 3, stride=2), nn.AdaptiveAvgPool2d((3, 4))],
        (1, 1, 15, 21),
        "1",
        [(7, 14 / 3, 3), (7, 5, 3)],
    ),
}


@pytest.mark.parametrize("case", list(ADAPTIVE_CASES))
def test_adaptive_pooling_with_uneven_windows_matches_the_gradient(case):
    layers, shape, layer, expected = ADAPTIVE_CASES[case]
    model = positive(*layers)
    axes, notes = reported_axes(model, shape, layer)
    assert "approximate" in notes  # at least one axis has windows of varying placement
    for axis, (size, jump, start) in enumerate(axes):
        supports = gradient_supports(model, shape, layer, axis)
        extents = [last - first + 1 for first, last in supports]
        assert max(extents) == size  # the widest window, not one more
        centres = measured_centres(supports)
        assert centres[0] == start  # unit 0's window is [0, ceil(I/O)): its centre is exact
        # Later units (uneven windows are not evenly spaced: "approximate"): in units of the previous
        # jump the true centre is (floor(iI/O) + ceil((i+1)I/O) - 1)/2, the theory's (ceil(I/O) - 1)/2 +
        # iI/O. Their difference is (floor(iI/O) - iI/O)/2 + (ceil((i+1)I/O) - (i+1)I/O)/2 -
        # (ceil(I/O) - I/O)/2, terms in (-1/2, 0], [0, 1/2) and (-1/2, 0]: it lies in (-1, 1/2).
        previous_jump = layers[0].stride[axis] if len(layers) > 1 else 1
        for unit, centre in enumerate(centres):
            assert -previous_jump < centre - (start + unit * jump) < previous_jump / 2
    # and the numbers worked out by hand (jumps like 7/3 are floats: equal to a few ulps)
    flat = [value for axis in axes for value in axis]
    assert flat == pytest.approx([value for axis in expected for value in axis], rel=1e-12)


def test_adaptive_max_pooling_matches_the_impulse_response():
    model = positive(nn.Conv2d(1, 1, 3), nn.AdaptiveMaxPool2d((3, 4)))
    shape = (1, 1, 9, 12)
    axes, _ = reported_axes(model, shape, "1")
    for axis, (size, _, start) in enumerate(axes):
        supports = impulse_supports(model, shape, "1", axis)
        assert max(last - first + 1 for first, last in supports) == size == 5
        assert measured_centres(supports)[0] == start == 2


# --- slicing with a step --------------------------------------------------------------------------------

SLICES = {
    # name: (slice applied after a 3x3 conv with padding 1 (field 3, jump 1, start 0), (height, width) axes)
    "every second column": (lambda x: x[..., ::2], ((3, 1, 0), (3, 2, 0))),
    "every third column from 1": (lambda x: x[..., 1::3], ((3, 1, 0), (3, 3, 1))),
    "rows 3 to 11 by 2": (lambda x: x[:, :, 3:11:2], ((3, 2, 3), (3, 1, 0))),
    "the last 6 columns, rows from 2": (lambda x: x[:, :, 2:, -6:], ((3, 1, 2), (3, 1, 7))),
    "both axes strided, offsets": (lambda x: x[:, :, 1::2, 2::4], ((3, 2, 1), (3, 4, 2))),
}


@pytest.mark.parametrize("case", list(SLICES))
def test_slicing_with_a_step_matches_the_gradient(case):
    function, expected = SLICES[case]
    model = positive(nn.Conv2d(1, 1, 3, padding=1), Op(function))
    shape = (1, 1, 12, 13)
    axes, _ = reported_axes(model, shape, "1")
    assert tuple(axes) == expected  # worked out by hand: jump x step, start + first index x jump
    for axis, (size, jump, start) in enumerate(axes):
        assert_exact_per_unit(gradient_supports(model, shape, "1", axis), size, jump, start, shape[2 + axis])


def test_slicing_after_a_strided_conv_scales_the_offset_by_the_jump():
    # conv 3x3 stride 2 (jump 2, start 1), then [..., 1::2]: jump 4, start 1 + 1*2 = 3.
    model = positive(nn.Conv2d(1, 1, 3, stride=2), Op(lambda x: x[..., 1::2]))
    shape = (1, 1, 15, 17)
    axes, _ = reported_axes(model, shape, "1")
    assert axes == [(3, 2, 1), (3, 4, 3)]
    for axis, (size, jump, start) in enumerate(axes):
        assert_exact_per_unit(gradient_supports(model, shape, "1", axis), size, jump, start, shape[2 + axis])


# --- interpolation ------------------------------------------------------------------------------------
#
# The theory's centre of output unit o is the continuous source coordinate: o * in/out for nearest
# (PyTorch's legacy 'nearest' then takes pixel floor of it), (o + 1/2) * in/out - 1/2 for half-pixel
# modes ('nearest-exact' takes the pixel nearest to it, 'bilinear' the two pixels around it, clamped to
# the image), o * (in - 1)/(out - 1) with align_corners. Each test derives the measured pixels from it.
# Centres like 10 * 0.7 are computed in floats: off from the exact value by ~1e-15, while an exact
# value that is not whole is at least 1/20 from a whole number here (ratios with denominators up to
# 20), so floor(centre + 1e-9) and "whole within 1e-9" decide as exact arithmetic would.


def interpolation_supports(resize, shape):
    model = positive(Op(resize))
    axes, _ = reported_axes(model, shape, "0")
    return model, axes, [gradient_supports(model, shape, "0", axis) for axis in range(2)]


@pytest.mark.parametrize(
    "resize",
    [
        pytest.param(lambda x: F.interpolate(x, scale_factor=2, mode="nearest"), id="scale 2"),
        pytest.param(lambda x: F.interpolate(x, size=(10, 4), mode="nearest"), id="7 to 10, 9 to 4"),
        # 7 * 1.5 = 10.5 rounds down to 10 pixels, yet PyTorch samples at o / 1.5, not o * 7/10
        pytest.param(lambda x: F.interpolate(x, scale_factor=1.5, mode="nearest"), id="scale 1.5"),
    ],
)
def test_nearest_takes_the_pixel_below_the_theory_centre(resize):
    _, axes, supports = interpolation_supports(resize, (1, 1, 7, 9))
    for (size, jump, start), axis_supports in zip(axes, supports, strict=True):
        assert size == 1
        for unit, support in enumerate(axis_supports):
            pixel = math.floor(start + unit * jump + 1e-9)  # o * in/out, exact up to float rounding
            assert support == (pixel, pixel), (unit, jump)


@pytest.mark.parametrize(
    "resize",
    [
        pytest.param(lambda x: F.interpolate(x, scale_factor=2, mode="nearest-exact"), id="scale 2"),
        pytest.param(lambda x: F.interpolate(x, size=(10, 4), mode="nearest-exact"), id="7 to 10, 9 to 4"),
        pytest.param(lambda x: F.interpolate(x, scale_factor=0.5, mode="nearest-exact"), id="scale 0.5"),
        pytest.param(lambda x: F.interpolate(x, scale_factor=1.5, mode="nearest-exact"), id="scale 1.5"),
    ],
)
def test_nearest_exact_takes_the_pixel_nearest_the_theory_centre(resize):
    _, axes, supports = interpolation_supports(resize, (1, 1, 7, 9))
    for (size, jump, start), axis_supports in zip(axes, supports, strict=True):
        assert size == 1
        for unit, support in enumerate(axis_supports):
            # PyTorch: floor((o + 1/2) * in/out), which is the half-pixel centre rounded half up.
            pixel = math.floor(start + unit * jump + 0.5 + 1e-9)
            assert support == (pixel, pixel), (unit, jump)


@pytest.mark.parametrize(
    ("resize", "align_corners"),
    [
        pytest.param(lambda x: F.interpolate(x, scale_factor=2, mode="bilinear"), False, id="scale 2"),
        pytest.param(lambda x: F.interpolate(x, size=(10, 4), mode="bilinear"), False, id="7 to 10, 9 to 4"),
        pytest.param(
            lambda x: F.interpolate(x, scale_factor=1.5, mode="bilinear"), False, id="scale 1.5: 7 to 10"
        ),
        pytest.param(
            lambda x: F.interpolate(x, size=(10, 4), mode="bilinear", align_corners=True),
            True,
            id="align corners",
        ),
    ],
)
def test_bilinear_takes_the_two_pixels_around_the_theory_centre(resize, align_corners):
    _, axes, supports = interpolation_supports(resize, (1, 1, 7, 9))
    for axis, ((size, jump, start), axis_supports) in enumerate(zip(axes, supports, strict=True)):
        length = (7, 9)[axis]
        assert size == 2
        for unit, support in enumerate(axis_supports):
            centre = start + unit * jump
            # PyTorch clamps a source coordinate below 0 to 0; a whole coordinate gives the second pixel
            # weight 0 (no gradient); past the last pixel the second one is clamped away.
            source = max(centre, 0.0)
            below = math.floor(source + 1e-9)
            whole = abs(source - round(source)) < 1e-9
            expected = (below, below) if whole or below >= length - 1 else (below, below + 1)
            assert support == expected, (axis, unit, centre)
        if not align_corners:
            assert start == pytest.approx(0.5 * jump - 0.5)


def test_bilinear_after_a_strided_conv_adds_one_jump():
    # conv 3x3 stride 2 on 17 px: 8 units, field 3, jump 2, start 1. Bilinear x2: jump 1, size 3 + 2 = 5,
    # start 1 + (0.5*0.5 - 0.5)*2 = 0.5. Unit o blends conv units floor(s) and floor(s) + 1 around
    # s = (centre - 1)/2, so it sees pixels 2 floor(s) to 2 floor(s) + 4.
    model = positive(
        nn.Conv2d(1, 1, 3, stride=2), Op(lambda x: F.interpolate(x, scale_factor=2, mode="bilinear"))
    )
    shape = (1, 1, 17, 17)
    axes, _ = reported_axes(model, shape, "1")
    assert axes == [(5, 1, 0.5)] * 2
    for axis in range(2):
        supports = gradient_supports(model, shape, "1", axis)
        for unit, support in enumerate(supports[1:-1], start=1):  # units 0 and 15 clamp to one conv unit
            conv_unit = math.floor((0.5 + unit - 1) / 2)
            assert support == (2 * conv_unit, 2 * conv_unit + 4), unit
