"""
Output size, padding, dilation, transposed convolution and the receptive field
==============================================================================

How big is a convolution's output, and how much of the input does one output value see? We work out
the output size by hand and compare it with ``sepconv.arithmetic`` and with the shape ``F.conv2d``
really returns; pad TensorFlow's 'same' way at any stride; dilate a kernel; run a convolution
backwards (transposed convolution); and follow the receptive field through a small network, first in
theory (a two-line recurrence) and then in effect (the gradient of one output value with respect to
the input).

The tutorial follows the second part of the course lesson on depthwise-separable and dilated
convolution: its 5 x 5 dilated example, its transposed-convolution matrices and the questions its
readers asked about dilation and the receptive field.

Run as a script, it writes its pictures (GIF animations, PNG figures) into the current folder.
"""

# %%
# The output size
# ---------------
# Along one axis, a convolution with kernel size ``k``, stride ``s``, padding ``p`` (added on *each*
# side, PyTorch's convention) and dilation ``d`` turns ``i`` input pixels into
#
# ``o = floor((i + 2p - d(k - 1) - 1) / s) + 1``
#
# output pixels: the kernel spans ``d(k - 1) + 1`` pixels, it fits at the first position, and then
# once more every ``s`` pixels while it stays inside the padded input. Below, each case is worked out
# by hand, then by ``arithmetic.conv_output_size``, then measured on a real ``F.conv2d`` output.
import math

import torch
import torch.nn.functional as F
from torch import nn

from sepconv import arithmetic
from sepconv.analysis import summarize
from sepconv.layers import Conv2d
from sepconv.viz import animate_conv, receptive_field_map
from sepconv.viz.animate import draw_frame, plan_animation

torch.manual_seed(0)

cases = [  # (i, k, s, p, d, o worked out by hand)
    (128, 3, 1, 0, 1, (128 + 0 - 2 - 1) // 1 + 1),  # the lesson's 128 x 128 input: 126
    (224, 3, 2, 1, 1, (224 + 2 - 2 - 1) // 2 + 1),  # a stride-2 layer of MobileNet: 112
    (5, 3, 2, 2, 2, (5 + 4 - 4 - 1) // 2 + 1),  # the animation below: 3
    (5, 3, 1, 0, 2, (5 + 0 - 4 - 1) // 1 + 1),  # the lesson's dilated 5 x 5 example: 1
]
print("   i  k  s  p  d  by hand  arithmetic  F.conv2d")
for i, k, s, p, d, by_hand in cases:
    formula = arithmetic.conv_output_size(i, k, stride=s, padding=p, dilation=d)
    x, weight = torch.zeros(1, 1, i, i), torch.zeros(1, 1, k, k)
    measured = F.conv2d(x, weight, stride=s, padding=p, dilation=d).shape[-1]
    print(f"{i:>4}{k:>3}{s:>3}{p:>3}{d:>3}{by_hand:>9}{formula:>12}{measured:>10}")
    assert by_hand == formula == measured
assert [case[-1] for case in cases] == [126, 112, 3, 1]

# %%
# Padding, and 'same' at any stride
# ---------------------------------
# With stride 1 and an odd kernel, ``p = d(k - 1) / 2`` keeps the size: that is PyTorch's
# ``padding="same"``. With a stride, "same" means something else: TensorFlow defines it as the output
# size ``ceil(i / s)``, and pads whatever that takes, ``(o - 1)s + d(k - 1) + 1 - i`` pixels in all,
# half before and the odd pixel *after*. PyTorch refuses ``padding="same"`` with a stride:
try:
    nn.Conv2d(3, 8, 3, stride=2, padding="same")
except ValueError as error:
    print("nn.Conv2d:", error)

# %%
# Models ported from TensorFlow (MobileNet, EfficientNet) need it. For a 224-pixel input, a 3 x 3
# kernel and stride 2, by hand: the output is ceil(224 / 2) = 112, the kernel needs
# (112 - 1) * 2 + 3 = 225 pixels, one more than the input: no pixel before, one after.
i, k, s = 224, 3, 2
o = math.ceil(i / s)
total = max((o - 1) * s + k - i, 0)
by_hand = (total // 2, total - total // 2)
print(f"output {o}, padding {total} in all: {by_hand[0]} before, {by_hand[1]} after")
assert arithmetic.same_padding(i, kernel_size=k, stride=s) == by_hand == (0, 1)

# %%
# sepconv's layers (``sepconv.layers.Conv2d`` and every layer built on it) accept ``padding="same"``
# at any stride and dilation, padding exactly that way. Check it against an explicit ``F.pad``
# followed by an unpadded convolution with the same weights; the two compute the very same sums, in
# the same order, so the outputs are equal, not merely close.
same = Conv2d(3, 8, 3, stride=2, padding="same")
x = torch.randn(1, 3, i, i)
with torch.no_grad():
    expected = F.conv2d(F.pad(x, (0, 1, 0, 1)), same.weight, same.bias, stride=2)
    output = same(x)
print("sepconv 'same', stride 2:", tuple(output.shape))
assert output.shape == (1, 8, o, o) and torch.equal(output, expected)

# %%
# Dilated convolution
# -------------------
# Dilation ``d`` spreads the kernel's taps ``d`` pixels apart: a 3 x 3 kernel with ``d = 2`` covers a
# 5 x 5 patch (``d(k - 1) + 1 = 5``) with 9 weights. The lesson's example puts such a kernel, all
# ones, on a 5 x 5 image: it reads the 9 pixels at even rows and even columns.
image = torch.tensor(
    [
        [3, 1, 1, 0, 1],
        [1, 2, 0, 2, 2],
        [2, 3, 1, 0, 1],
        [1, 1, 0, 0, 2],
        [2, 2, 3, 1, 3],
    ],
    dtype=torch.float32,
)
by_hand = (3 + 1 + 1) + (2 + 1 + 1) + (2 + 3 + 3)  # rows 0, 2 and 4, columns 0, 2 and 4
dilated = F.conv2d(image[None, None], torch.ones(1, 1, 3, 3), dilation=2)
span = arithmetic.effective_kernel_size(3, dilation=2)
print(f"effective kernel size {span}, output {dilated.item():g}")
assert dilated.item() == by_hand == image[::2, ::2].sum() == 17
assert span == 2 * (3 - 1) + 1 == 5

# %%
# A reader asked whether dilation really avoids shrinking the feature map. It does when the padding
# matches it: ``p = d(k - 1) / 2`` keeps a stride-1 output as large as its input, while every output
# value sees a larger patch.
for dilation in (1, 2, 4):
    padding = dilation * (3 - 1) // 2
    size = arithmetic.conv_output_size(32, 3, padding=padding, dilation=dilation)
    seen = dilation * (3 - 1) + 1
    print(f"dilation {dilation}, padding {padding}: 32 -> {size}, sees {seen} x {seen}")
    assert size == 32

# %%
# The animation shows a 3 x 3 kernel with stride 2, dilation 2 and padding 2 on a 5 x 5 input
# (``sepconv animate --input-size 1,5,5 --kernel-size 3 --stride 2 --dilation 2 --padding 2``):
# grey cells are padding, the coloured cells the 9 pixels the kernel reads, and the window moves 2
# pixels at a time; the output is the 3 x 3 worked out in the first table. Every value written is
# ``F.conv2d``'s.
geometry = dict(input_size=5, kernel_size=3, stride=2, dilation=2, padding=2)
animation = animate_conv("stride2_dilation2.gif", **geometry)
print(f"{len(animation.frames)} frames, output {tuple(animation.output.shape[-2:])}")
assert animation.output.shape[-2:] == (3, 3) and len(animation.frames) == 9

# %%
# Transposed convolution
# ----------------------
# A transposed convolution maps the other way: each *input* pixel scatters a copy of the kernel,
# scaled by its value, into the output, ``s`` pixels apart. Its output size undoes the forward
# formula:
#
# ``o = (i - 1)s - 2p + d(k - 1) + output_padding + 1``
#
# The lesson draws a 2 x 2 input of ones through an all-ones 3 x 3 kernel. At stride 1 the four
# scattered 3 x 3 blocks overlap into a 4 x 4 output; at stride 2 they sit 2 pixels apart in a
# 5 x 5 output, overlapping on the middle row and column only.
ones = torch.ones(1, 1, 2, 2)
for stride, by_hand in ((1, (2 - 1) * 1 + 3), (2, (2 - 1) * 2 + 3)):
    output = F.conv_transpose2d(ones, torch.ones(1, 1, 3, 3), stride=stride)[0, 0]
    print(f"stride {stride}: {by_hand} x {by_hand}")
    print(output.int())
    assert output.shape == (by_hand, by_hand)
    assert arithmetic.conv_transpose_output_size(2, 3, stride=stride) == by_hand
    # With all ones, each multiply-add adds 1: 4 input pixels x 9 taps = 36 in all, at any stride.
    assert output.sum() == 4 * 9
    assert arithmetic.conv_transpose_macs(1, 1, 3, input_size=2) == 36

# %%
# The same result comes out of an ordinary convolution: insert ``s - 1`` zeros between the input
# pixels, pad ``d(k - 1) - p`` zeros around them, and slide the kernel *flipped* at stride 1. That
# zero-insertion view is how ``sepconv animate --transposed`` draws it, and why a transposed
# convolution is sometimes called a fractionally strided one. With random values, stride 2 and
# padding 1:
x, kernel = torch.randn(1, 1, 3, 3), torch.randn(1, 1, 3, 3)
inserted = torch.zeros(1, 1, 5, 5)
inserted[..., ::2, ::2] = x  # 2 - 1 = 1 zero between neighbours
grid = F.pad(inserted, (1, 1, 1, 1))  # 1 * (3 - 1) - 1 = 1 pixel on each side
by_insertion = F.conv2d(grid, kernel.flip(-2, -1))
transposed = F.conv_transpose2d(x, kernel, stride=2, padding=1)
print(
    "transposed output",
    tuple(transposed.shape[-2:]),
    " zero-insertion output",
    tuple(by_insertion.shape[-2:]),
)
assert transposed.shape == by_insertion.shape == (1, 1, 5, 5)
# Both sum at most 9 products per output value, maybe in another order. As in the first tutorial,
# float32 rounding moves such a sum by at most about 9 * 2**-24 times the sum of the products'
# magnitudes, so two correct computations differ by at most twice that.
magnitudes = F.conv_transpose2d(x.abs(), kernel.abs(), stride=2, padding=1)
bound = 2 * 9 * (torch.finfo(torch.float32).eps / 2) * magnitudes
assert ((transposed - by_insertion).abs() <= bound).all()

# %%
# One frame of the animated transposed convolution (a 2 x 2 input, stride 2, padding 1): the input
# pixels with a zero between them, the padding grey, the flipped kernel's window lit.
geometry = dict(input_size=2, kernel_size=3, stride=2, padding=1, transposed=True)
transposed_plan = plan_animation(**geometry)
frame_figure = draw_frame(transposed_plan.steps[0], 4)
frame_figure.savefig("transposed_frame.png", dpi=80)
assert transposed_plan.output.shape[-2:] == (3, 3)  # (2 - 1) * 2 - 2 * 1 + 3 = 3

# %%
# The receptive field, in theory
# ------------------------------
# The receptive field of an output value is the patch of input pixels it depends on. One 3 x 3
# convolution sees 3 x 3 pixels; a second one on top sees 3 x 3 values of the first, which together
# see 5 x 5 pixels. (Readers of the lesson wondered whether that should be 6 x 6: no, neighbouring
# values of the first layer read overlapping patches, so each new layer adds only ``k - 1`` pixels.)
# Once a layer has a stride, every later step of growth counts ``stride`` input pixels. Per layer,
# with ``r`` the field size and ``j`` the distance in input pixels between neighbouring output values
# (the "jump"):
#
# ``r_out = r_in + d(k - 1) * j_in`` and ``j_out = j_in * s``
#
# A small stack: a 3 x 3 convolution, a 3 x 3 with stride 2, a 3 x 3 with dilation 2.
stack = nn.Sequential(
    nn.Conv2d(1, 4, 3, padding=1),
    nn.ReLU(),
    nn.Conv2d(4, 4, 3, stride=2, padding=1),
    nn.ReLU(),
    nn.Conv2d(4, 1, 3, padding=2, dilation=2),
)
r, j = 1, 1
r, j = r + (3 - 1) * j, j * 1  # first 3 x 3: r = 3, j = 1
r, j = r + (3 - 1) * j, j * 2  # 3 x 3, stride 2: r = 5, j = 2
r, j = r + 2 * (3 - 1) * j, j * 1  # dilation 2: r = 5 + 4 * 2 = 13, j = 2
summary = summarize(stack, (1, 1, 32, 32))
print(f"by hand: field {r} x {r}, jump {j}")
print(f"summarize: field {summary.receptive_field}, jump {summary.effective_stride}")
assert summary.receptive_field == (r, r) == (13, 13)
assert summary.effective_stride == (j, j)

field = arithmetic.ReceptiveField()
for conv in (stack[0], stack[2], stack[4]):
    field = arithmetic.receptive_field_step(
        field, conv.kernel_size[0], conv.stride[0], conv.padding[0], conv.dilation[0]
    )
assert (field.size, field.stride) == (r, j)
print(summary)

# %%
# The receptive field, in effect
# ------------------------------
# Not every pixel of the theoretical field counts the same. Take the gradient of one output value
# with respect to the input: it is zero outside the theoretical field, and inside it measures how
# much each pixel moves that value (the *effective* receptive field). For two stacked 3 x 3
# convolutions with all-one weights and no activation the gradient can be worked out by hand: a
# pixel counts once for every path through the two kernels that reaches it, 1, 2, 3, 2, 1 along each
# axis, so the centre pixel counts 9 times as much as a corner.
two_ones = nn.Sequential(nn.Conv2d(1, 1, 3, bias=False), nn.Conv2d(1, 1, 3, bias=False))
for conv in two_ones:
    nn.init.ones_(conv.weight)
paths = torch.tensor([1.0, 2, 3, 2, 1])
# A 9 x 9 input gives a 5 x 5 output; by default the map is taken for its centre value.
field_map, _ = receptive_field_map(two_ones, "1", torch.rand(1, 9, 9))
print(field_map.gradient[2:7, 2:7])
assert torch.equal(field_map.gradient[2:7, 2:7], torch.outer(paths, paths))
# Nothing outside the 5 x 5 field: the whole gradient sums to (1 + 2 + 3 + 2 + 1) ** 2.
assert field_map.gradient.sum() == paths.sum() ** 2 == 81
assert field_map.receptive_field == (5, 5)

# %%
# ``receptive_field_map`` (also ``sepconv rf MODEL --layer NAME``) draws both for the stack above,
# with its random weights and a random image: the theoretical 13 x 13 box, and the input gradient of
# the centre output value. Nothing outside the box moves it, but inside the box the map is far from
# even: a few pixels dominate, and wherever a ReLU is off for this image, the paths through it add
# nothing. The effective receptive field is the part of the theoretical one that really counts.
image = torch.rand(1, 32, 32)
field_map, figure = receptive_field_map(stack, "4", image)
figure.savefig("receptive_field.png", dpi=70)
print("theoretical box", field_map.theoretical, "non-zero gradient", field_map.support)
assert field_map.receptive_field == (13, 13)
support = field_map.support
assert support is not None and support.height <= 13 and support.width <= 13

# %%
# Next, :ref:`sphx_glr_auto_tutorials_tut_03_inverted_residual.py` builds MobileNetV2's block from
# depthwise and pointwise convolutions and counts it.
