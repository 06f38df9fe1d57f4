"""Animation frames against the operators: every value drawn equals F.conv2d / F.conv_transpose2d.

The reference is recomputed here with plain PyTorch on the same tensors (and, for 'same' padding,
with hand-worked padding amounts). Tensors are float64 with a few dozen products per output, so two
summation orders differ by ~1e-15: the default float64 tolerances of ``assert_close`` (1e-7) are ample
and still catch any wrong window or channel (an error of at least one product, ~1e-1).
"""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image, ImageSequence

from sepconv.arithmetic import same_padding
from sepconv.layers import Conv2d, SeparableConv2d
from sepconv.viz.animate import (
    ConvStep,
    animate_conv,
    conv_step,
    conv_transpose_step,
    draw_frame,
    ffmpeg_executable,
    plan_animation,
    write_animation,
)
from sepconv.viz.animation_render import StepRenderer


def _random(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _frame_values(step: ConvStep) -> torch.Tensor:
    """The values the frames write, placed at their (channel, row, col)."""
    values = torch.full_like(step.output, float("nan"))
    for frame in step.frames:
        values[(frame.out_channel, *frame.out_position)] = frame.value
    return values


def _assert_windows_read_the_value(step: ConvStep) -> None:
    # What the picture shows (window cells, channels read, shown kernel) must give the written value.
    for frame in step.frames:
        rows = torch.tensor([cell[0] for cell in frame.window])
        cols = torch.tensor([cell[1] for cell in frame.window])
        taps = step.grid[list(frame.in_channels)][:, rows, cols]
        products = taps * step.kernel[frame.out_channel].flatten(1)
        torch.testing.assert_close(products.sum(), torch.tensor(frame.value, dtype=torch.float64))


def test_stride_2_dilation_2_frames_equal_conv2d():
    x, weight = _random(2, 9, 9, seed=1), _random(3, 2, 3, 3, seed=2)
    step = conv_step(x, weight, stride=2, padding=1, dilation=2)
    expected = F.conv2d(x[None], weight, stride=2, padding=1, dilation=2)[0]
    assert step.output.shape == (3, 4, 4)  # (9 + 2*1 - (2*(3-1)+1)) // 2 + 1 = 4
    assert len(step.frames) == 3 * 4 * 4
    torch.testing.assert_close(_frame_values(step), expected)
    # Output (0, 1) starts at padded column 2 and reads every second cell: worked out by hand.
    second = step.frames[1]
    assert second.out_position == (0, 1)
    assert second.window == tuple((r, c) for r in (0, 2, 4) for c in (2, 4, 6))
    assert second.in_channels == (0, 1)
    assert step.grid.shape == (2, 11, 11)
    assert step.is_padding[0].all() and not step.is_padding[1, 1:-1].any()
    _assert_windows_read_the_value(step)


@pytest.mark.parametrize("stride", [1, 2])
def test_same_padding_with_even_kernel_puts_the_odd_pixel_at_the_end(stride):
    x, weight = _random(1, 6, 6, seed=3), _random(2, 1, 2, 4, seed=4)
    step = conv_step(x, weight, stride=stride, padding="same")
    # Hand-worked TF 'same' totals, rows (ceil(6/s) - 1) * s + 2 - 6 and cols (ceil(6/s) - 1) * s + 4 - 6:
    # stride 1 -> 1 and 3, the odd pixel after (bottom, right); stride 2 -> 0 and 2.
    (top, bottom), (left, right) = {1: ((0, 1), (1, 2)), 2: ((0, 0), (1, 1))}[stride]
    expected = F.conv2d(F.pad(x[None], (left, right, top, bottom)), weight, stride=stride)[0]
    assert step.output.shape == (2, 6 // stride, 6 // stride)
    torch.testing.assert_close(_frame_values(step), expected)
    # The layers' own 'same' padding agrees (one convention in all of sepconv).
    layer = Conv2d(1, 2, (2, 4), stride=stride, padding="same", bias=False).double()
    with torch.no_grad():
        layer.weight.copy_(weight)
    torch.testing.assert_close(_frame_values(step), layer(x[None])[0])
    assert step.grid.shape == (1, 6 + top + bottom, 6 + left + right)
    _assert_windows_read_the_value(step)


@pytest.mark.parametrize("groups", [1, 2])
def test_transposed_stride_2_frames_equal_conv_transpose2d(groups):
    x, weight = _random(2, 3, 3, seed=5), _random(2, 2 // groups, 3, 3, seed=6)
    step = conv_transpose_step(x, weight, stride=2, padding=1, output_padding=1, groups=groups)
    expected = F.conv_transpose2d(x[None], weight, stride=2, padding=1, output_padding=1, groups=groups)[0]
    torch.testing.assert_close(_frame_values(step), expected)
    # Zero-insertion view: 3 pixels with 1 zero between -> 5; padded by 1*(3-1) - 1 = 1 on each side
    # and output_padding 1 more at the end -> 8; a stride-1 conv of 3x3 gives 6 = conv_transpose size.
    assert step.grid.shape == (2, 8, 8)
    assert step.output.shape == (2 // groups * groups, 6, 6)
    assert step.stride == (1, 1)
    pixels = ~step.is_padding
    assert pixels.sum() == 9 and pixels[1, 1] and pixels[1, 3] and not pixels[1, 2]
    torch.testing.assert_close(step.grid[:, 1:6:2, 1:6:2], x)
    _assert_windows_read_the_value(step)


@given(
    groups=st.sampled_from([1, 2]),
    kernel=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    padding=st.one_of(st.integers(0, 2), st.just("same")),
    size=st.tuples(st.integers(5, 7), st.integers(5, 7)),
)
def test_any_geometry_frames_equal_conv2d(groups, kernel, stride, dilation, padding, size):
    x, weight = _random(2, *size, seed=14), _random(2, 2 // groups, *kernel, seed=15)
    step = conv_step(x, weight, stride=stride, padding=padding, dilation=dilation, groups=groups)
    if padding == "same":
        (top, bottom), (left, right) = (
            same_padding(size[a], kernel[a], stride[a], dilation[a]) for a in range(2)
        )
        expected = F.conv2d(
            F.pad(x[None], (left, right, top, bottom)),
            weight,
            stride=stride,
            dilation=dilation,
            groups=groups,
        )
    else:
        expected = F.conv2d(x[None], weight, stride=stride, padding=padding, dilation=dilation, groups=groups)
    torch.testing.assert_close(_frame_values(step), expected[0])
    _assert_windows_read_the_value(step)


@given(
    kernel=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    stride=st.integers(1, 3),
    dilation=st.integers(1, 2),
    padding=st.integers(0, 3),
    extra=st.integers(0, 2),
)
def test_any_transposed_geometry_frames_equal_conv_transpose2d(kernel, stride, dilation, padding, extra):
    x, weight = _random(2, 3, 4, seed=16), _random(2, 1, *kernel, seed=17)
    options = {
        "stride": stride,
        "padding": padding,
        "output_padding": extra,
        "dilation": dilation,
        "groups": 2,
    }
    try:
        expected = F.conv_transpose2d(x[None], weight, **options)[0]
    except RuntimeError:  # a geometry PyTorch refuses must be refused here too, with a ValueError
        with pytest.raises(ValueError):
            conv_transpose_step(x, weight, **options)
        return
    step = conv_transpose_step(x, weight, **options)
    torch.testing.assert_close(_frame_values(step), expected)
    _assert_windows_read_the_value(step)


def test_groups_2_frames_read_their_group_of_channels():
    x, weight = _random(4, 5, 5, seed=7), _random(6, 2, 3, 3, seed=8)
    animation = plan_animation(in_channels=4, out_channels=6, groups=2, input=x, weight=weight)
    (step,) = animation.steps
    torch.testing.assert_close(_frame_values(step), F.conv2d(x[None], weight, groups=2)[0])
    reads = {frame.out_channel: frame.in_channels for frame in step.frames}
    assert reads == {0: (0, 1), 1: (0, 1), 2: (0, 1), 3: (2, 3), 4: (2, 3), 5: (2, 3)}
    _assert_windows_read_the_value(step)


def test_depthwise_with_multiplier_2_frames_equal_grouped_conv2d():
    x, weight = _random(3, 4, 4, seed=9), _random(6, 1, 3, 3, seed=10)
    animation = plan_animation(
        in_channels=3, depthwise=True, depth_multiplier=2, padding=1, input=x, weight=weight
    )
    (step,) = animation.steps
    assert step.name == "depthwise" and step.groups == 3
    torch.testing.assert_close(_frame_values(step), F.conv2d(x[None], weight, padding=1, groups=3)[0])
    # Output channel o reads input channel o // 2 only (two filters per input channel).
    assert {frame.out_channel: frame.in_channels for frame in step.frames} == {o: (o // 2,) for o in range(6)}


def test_separable_shows_the_depthwise_then_the_pointwise_step():
    x = _random(2, 5, 5, seed=11)
    depthwise, pointwise = _random(4, 1, 3, 3, seed=12), _random(3, 4, 1, 1, seed=13)
    animation = plan_animation(
        in_channels=2,
        out_channels=3,
        separable=True,
        depth_multiplier=2,
        stride=2,
        padding=1,
        input=x,
        weight=depthwise,
        pointwise_weight=pointwise,
    )
    first, second = animation.steps
    hidden = F.conv2d(x[None], depthwise, stride=2, padding=1, groups=2)
    torch.testing.assert_close(_frame_values(first), hidden[0])
    torch.testing.assert_close(_frame_values(second), F.conv2d(hidden, pointwise)[0])
    assert [frame.step for frame in animation.frames] == ["depthwise"] * 4 * 9 + ["pointwise"] * 3 * 9
    assert all(frame.in_channels == (0, 1, 2, 3) and len(frame.window) == 1 for frame in second.frames)
    # And the whole equals sepconv's SeparableConv2d with these weights.
    layer = SeparableConv2d(2, 3, 3, stride=2, padding=1, depth_multiplier=2, bias=False).double()
    with torch.no_grad():
        layer.depthwise.weight.copy_(depthwise)
        layer.pointwise.weight.copy_(pointwise)
    torch.testing.assert_close(animation.output, layer(x[None])[0])


def test_hand_worked_integer_example():
    # [[1,2,3],[4,5,6],[7,8,9]] * [[1,2],[0,-1]]: 1+4-5, 2+6-6, 4+10-8, 5+12-9.
    animation = plan_animation(
        input=torch.arange(1, 10).reshape(3, 3)[None], weight=torch.tensor([[[[1, 2], [0, -1]]]])
    )
    assert [frame.value for frame in animation.frames] == [0.0, 2.0, 6.0, 8.0]
    assert animation.frames[3].window == ((1, 1), (1, 2), (2, 1), (2, 2))


def test_mp4_holds_the_gif_frames_in_order(tmp_path):
    """The MP4 (ffmpeg from PATH or imageio-ffmpeg, a test dependency) decodes to the GIF's frames.

    H.264 is lossy, so no exact match: each decoded frame must be nearer its own GIF frame than any
    other (measured: about 1.5 grey levels of mean error to its own, over 13 to the next nearest).
    """
    ffmpeg = ffmpeg_executable()
    assert ffmpeg is not None, "pip install -e '.[test]' installs imageio-ffmpeg"
    geometry = {"input_size": 4, "kernel_size": 3, "stride": 1, "seed": 3}
    animation = animate_conv(tmp_path / "conv.mp4", **geometry)
    animate_conv(tmp_path / "conv.gif", **geometry)
    assert (tmp_path / "conv.mp4").read_bytes()[4:8] == b"ftyp"  # an ISO media file starts with its ftyp box
    gif = [
        np.asarray(frame.convert("RGB"), dtype=np.int16)
        for frame in ImageSequence.Iterator(Image.open(tmp_path / "conv.gif"))
    ]
    height, width = (size - size % 2 for size in gif[0].shape[:2])  # H.264 wants even sizes
    decoded = subprocess.run(
        [
            ffmpeg,
            "-loglevel",
            "error",
            "-i",
            str(tmp_path / "conv.mp4"),
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-",
        ],
        capture_output=True,
        check=True,
    ).stdout
    mp4 = np.frombuffer(decoded, np.uint8).reshape(-1, height, width, 3).astype(np.int16)
    assert len(mp4) == len(gif) == len(animation.frames)
    distance = np.array([[np.abs(frame - other[:height, :width]).mean() for other in gif] for frame in mp4])
    assert list(distance.argmin(axis=1)) == list(range(len(gif)))


def test_seeded_values_are_small_integers_and_repeat():
    first = plan_animation(in_channels=2, out_channels=2, input_size=(4, 5), kernel_size=(2, 3), seed=4)
    again = plan_animation(in_channels=2, out_channels=2, input_size=(4, 5), kernel_size=(2, 3), seed=4)
    other = plan_animation(in_channels=2, out_channels=2, input_size=(4, 5), kernel_size=(2, 3), seed=5)
    step = first.steps[0]
    assert torch.equal(step.grid, again.steps[0].grid) and torch.equal(step.kernel, again.steps[0].kernel)
    assert not torch.equal(step.grid, other.steps[0].grid)
    assert step.grid.min() >= 0 and step.grid.max() <= 4 and torch.equal(step.grid, step.grid.round())
    assert step.kernel.abs().max() <= 2 and torch.equal(step.kernel, step.kernel.round())
    # Integers: the frame values are exact, equal to the operator's to the last bit.
    assert torch.equal(_frame_values(step), F.conv2d(step.grid[None], step.kernel)[0])


@pytest.mark.parametrize(
    ("geometry", "message"),
    [
        ({"input_size": 3, "kernel_size": 5}, "kernel_size=5"),
        ({"input_size": 5, "kernel_size": 3, "dilation": 3}, "dilation=3"),
        ({"in_channels": 3, "out_channels": 4, "groups": 2}, "groups=2"),
        ({"in_channels": 2, "depthwise": True, "separable": True}, "depthwise and separable"),
        ({"transposed": True, "padding": "same"}, "padding"),
        ({"transposed": True, "stride": 2, "output_padding": 2}, "output_padding=2"),
    ],
)
def test_impossible_geometry_is_a_value_error_naming_it(geometry, message):
    with pytest.raises(ValueError, match=message):
        plan_animation(**geometry)


def test_gif_of_7x7_input_3x3_kernel_decodes_with_every_frame(tmp_path):
    path = tmp_path / "conv.gif"
    calls = []
    animation = animate_conv(
        path, input_size=7, kernel_size=3, fps=4, progress=lambda done, total: calls.append((done, total))
    )
    assert len(animation.frames) == 25  # (7 - 3 + 1)^2 output cells, one frame each
    assert calls == [(done, 25) for done in range(1, 26)]
    assert path.stat().st_size < 1_000_000
    with Image.open(path) as gif:
        assert gif.format == "GIF" and gif.n_frames == 25
        assert gif.info["duration"] == 250 and gif.info["loop"] == 0
    assert [p.name for p in tmp_path.iterdir()] == ["conv.gif"]  # no temporary file left


def test_separable_gif_frames_of_the_smaller_step_show_nothing_of_the_larger(tmp_path):
    # The depthwise step is drawn on a larger figure than the pointwise one; a GIF paints each frame
    # over the last, so without a common canvas the pointwise frames showed the depthwise edges.
    path = tmp_path / "separable.gif"
    animation = animate_conv(path, in_channels=2, out_channels=1, separable=True, input_size=4, seed=1)
    first, second = (StepRenderer(step) for step in animation.steps)
    small = second.render(animation.steps[1].frames[-1])
    assert small.shape[1] < first.render(animation.steps[0].frames[0]).shape[1]
    with Image.open(path) as gif:
        frames = [np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(gif)]
    assert len(frames) == len(animation.frames) and len({frame.shape for frame in frames}) == 1
    last = frames[-1]
    top, left = ((big - size) // 2 for big, size in zip(last.shape[:2], small.shape[:2]))
    # The palette is adaptive (32 colours), so compare after quantizing the expected picture alike.
    expected = np.asarray(
        Image.fromarray(small).quantize(colors=32, method=Image.Quantize.FASTOCTREE).convert("RGB")
    )
    assert np.array_equal(last[top : top + small.shape[0], left : left + small.shape[1]], expected)
    border = np.ones(last.shape[:2], dtype=bool)
    border[top : top + small.shape[0], left : left + small.shape[1]] = False
    assert (last[border] == expected[0, 0]).all()  # the rest is the frame's own background, nothing older


def test_draw_frame_writes_the_operator_value_in_the_title_and_the_output_cell():
    animation = plan_animation(input_size=4, kernel_size=3, seed=2)
    step = animation.steps[0]
    figure = draw_frame(step, 3)
    texts = [text.get_text() for text in figure.texts] + [
        text.get_text() for ax in figure.axes for text in ax.texts
    ]
    value = int(step.output[0, 1, 1])
    assert f"out[0][1,1] = {value}" in " ".join(texts)
    # Output panel: all four values written by frame 3 (row-major order).
    output_texts = [text.get_text() for text in figure.axes[-1].texts if text.get_text() not in ("", "out 0")]
    assert output_texts == [str(int(v)) for v in step.output[0].flatten()]


def test_failed_writes_leave_no_file(tmp_path):
    animation = plan_animation(input_size=3, kernel_size=2)
    with pytest.raises(ValueError, match=r"must end in \.gif or \.mp4"):
        write_animation(animation, tmp_path / "conv.png")
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(NotADirectoryError, match="is not a folder"):
        write_animation(animation, blocker / "conv.gif")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
