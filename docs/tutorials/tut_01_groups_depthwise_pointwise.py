"""
Groups, depthwise, pointwise and separable convolution
======================================================

A standard convolution feeds every input channel into every output channel. The ``groups`` argument
of ``nn.Conv2d`` cuts those connections into independent blocks; taken to the limit, one block per
channel, it gives the *depthwise* convolution, and a depthwise convolution followed by a 1x1
(*pointwise*) one is the *depthwise-separable* convolution that MobileNet is built from.

Here we build each of them in plain PyTorch and with sepconv, work out their parameters and
multiply-adds (MACs) by hand, and check every number against sepconv's own counters. The tutorial
follows the first part of the course lesson on depthwise-separable and dilated convolution (with the
questions its readers asked), the course's blog post on ``groups`` and the parameters of depthwise and
pointwise convolutions (its 3-to-4-channel example) and the MobileNetV2 post (its 16-to-32-channel
example).

Run as a script, it writes its pictures (GIF animations, PNG diagrams) into the current folder.
"""

# %%
# Shapes first
# ------------
# PyTorch's convolutions work on batches: a tensor of shape (N, C, H, W), batch first, then channels,
# then height and width. One RGB image of 128 x 128 pixels is a (3, 128, 128) tensor, and
# ``unsqueeze(0)`` puts a batch axis of size 1 in front of it. That is why, in the lesson, the channel
# count is read as ``x.shape[1]``: after ``unsqueeze(0)``, ``x.shape[0]`` is the batch size.
import torch
import torch.nn.functional as F
from torch import nn

from sepconv import arithmetic
from sepconv.analysis import summarize
from sepconv.layers import DepthwiseConv2d, PointwiseConv2d, SeparableConv2d
from sepconv.viz import animate_conv, diagram

torch.manual_seed(0)
image = torch.rand(3, 128, 128)
batch = image.unsqueeze(0)
print("one image:", tuple(image.shape), "  as a batch of one:", tuple(batch.shape))
assert batch.shape == (1, 3, 128, 128)


def count_params(module: nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


# %%
# What ``groups`` does
# --------------------
# ``nn.Conv2d(c_in, c_out, k, groups=g)`` cuts the input channels into ``g`` consecutive blocks of
# ``c_in / g`` channels and the output channels into ``g`` blocks of ``c_out / g``; output block *i*
# is computed from input block *i* alone, as if ``g`` small convolutions ran side by side. So each
# filter is ``k x k x (c_in / g)``, the weight has shape ``(c_out, c_in / g, k, k)``, and the layer
# has ``g`` times fewer weights than the standard one (``g`` must divide both channel counts).
#
# The course's example: 4 input channels, 8 output channels, 3 x 3 kernels.
c_in, c_out, k = 4, 8, 3
for groups in (1, 2, 4):
    conv = nn.Conv2d(c_in, c_out, k, groups=groups, bias=False)
    by_hand = k * k * (c_in // groups) * c_out
    print(
        f"groups={groups}: weight {tuple(conv.weight.shape)}, "
        f"parameters {k}*{k}*({c_in}/{groups})*{c_out} = {by_hand}"
    )
    assert count_params(conv) == by_hand
    assert arithmetic.conv_params(c_in, c_out, k, groups=groups, bias=False) == by_hand

# %%
# Which input channels does each output channel read? Rather than trust the rule, ask the layer:
# the gradient of one output channel with respect to the input is non-zero exactly on the input
# channels that output reads.


def channels_read(conv: nn.Conv2d) -> list[list[int]]:
    """For each output channel of ``conv``, the input channels its values depend on."""
    x = torch.randn(1, conv.in_channels, 6, 6, requires_grad=True)
    output = conv(x)
    read = []
    for channel in range(conv.out_channels):
        total = output[0, channel].sum()
        (gradient,) = torch.autograd.grad(total, x, retain_graph=True)
        moved = gradient[0].abs().sum(dim=(1, 2))  # one value per input channel
        read.append([i for i in range(conv.in_channels) if moved[i] > 0])
    return read


grouped = nn.Conv2d(4, 8, 3, groups=2)
for out_channel, inputs in enumerate(channels_read(grouped)):
    print(f"output channel {out_channel} reads input channels {inputs}")
    block = out_channel // (8 // 2)  # its group
    assert inputs == list(range(block * (4 // 2), (block + 1) * (4 // 2)))

# %%
# The animation below is ``sepconv.viz.animate_conv`` (also ``sepconv animate --groups 2``): a
# grouped convolution from 4 channels to 2 with ``groups=2`` on a 4 x 4 input. Each frame writes one
# output value; the channels that output reads are lit, the kernel's window on them is coloured, the
# channels of the other group are faded. The inputs and weights are small integers so that you can
# check a frame by hand, and every value written is the one ``F.conv2d`` computes on the drawn
# tensors (the course's readers asked how such animations are drawn: this is how).
geometry = dict(in_channels=4, out_channels=2, groups=2, input_size=4)
animation = animate_conv("grouped_conv.gif", **geometry)
# One frame per output value: 2 channels of 2 x 2 (4 - 3 + 1 = 2 per side).
print(f"{len(animation.frames)} frames, output {tuple(animation.output.shape)}")
assert len(animation.frames) == 2 * 2 * 2

# %%
# Depthwise convolution
# ---------------------
# With ``groups = c_in`` every block holds one input channel: each channel is filtered on its own,
# with its own ``k x k`` filters, and no channels are mixed. A *depth multiplier* ``M`` gives each
# channel ``M`` filters, so ``c_out = M * c_in`` and the layer has ``k * k * M * c_in`` weights.
# sepconv's ``DepthwiseConv2d`` *is* such an ``nn.Conv2d`` (a subclass), so every tool that knows
# ``nn.Conv2d`` keeps working. The course's example is 3 channels and 3 x 3 filters.
for multiplier in (1, 2):
    depthwise = DepthwiseConv2d(3, 3, depth_multiplier=multiplier, bias=False)
    by_hand = 3 * 3 * multiplier * 3
    print(depthwise, "->", f"3*3*{multiplier}*3 = {by_hand} parameters")
    assert isinstance(depthwise, nn.Conv2d) and depthwise.groups == 3
    assert depthwise.out_channels == multiplier * 3
    assert count_params(depthwise) == by_hand
    assert arithmetic.depthwise_params(3, 3, multiplier, bias=False) == by_hand
    plain = nn.Conv2d(3, 3 * multiplier, 3, groups=3, bias=False)
    assert count_params(plain) == by_hand

# %%
# The depthwise step with a depth multiplier of 2 on 2 channels: output channels 0 and 1 read input
# channel 0 only, output channels 2 and 3 read input channel 1 only.
geometry = dict(in_channels=2, depthwise=True, depth_multiplier=2, input_size=4)
animation = animate_conv("depthwise_conv.gif", **geometry)
print({frame.out_channel: frame.in_channels for frame in animation.frames})
assert {frame.out_channel: frame.in_channels for frame in animation.frames} == {
    0: (0,),
    1: (0,),
    2: (1,),
    3: (1,),
}

# %%
# Pointwise convolution
# ---------------------
# A 1 x 1 convolution looks at one pixel at a time and mixes the channels there: at every pixel it
# multiplies the vector of ``c_in`` channel values by the same ``c_out x c_in`` matrix (and adds the
# bias). It has ``c_in * c_out`` weights, plus ``c_out`` biases.
#
# We check that with ``torch.einsum``. The two compute the same sums, maybe in another order, and
# float32 rounds every sum: a sum of ``n`` terms is exact to within about ``n * u`` times the sum of
# the terms' magnitudes, ``u = 2**-24`` being float32's unit roundoff. Two correct computations of the
# same sums therefore differ by at most twice that, which we compute for every output value.
UNIT_ROUNDOFF = torch.finfo(torch.float32).eps / 2


def rounding_bound(terms_per_sum: int, magnitudes: torch.Tensor) -> torch.Tensor:
    """How far two float32 computations of the same sums may differ, per value."""
    return 2 * terms_per_sum * UNIT_ROUNDOFF * magnitudes


pointwise = PointwiseConv2d(3, 4)
with torch.no_grad():
    matrix, bias = pointwise.weight[:, :, 0, 0], pointwise.bias  # (4, 3) and (4,)
    mixed = torch.einsum("oc,nchw->nohw", matrix, batch) + bias[None, :, None, None]
    magnitudes = torch.einsum("oc,nchw->nohw", matrix.abs(), batch.abs())
    magnitudes += bias.abs()[None, :, None, None]
    assert ((pointwise(batch) - mixed).abs() <= rounding_bound(3 + 1, magnitudes)).all()
print(f"pointwise 3 -> 4: 3*4 + 4 = {3 * 4 + 4} parameters")
assert count_params(pointwise) == 3 * 4 + 4 == arithmetic.pointwise_params(3, 4)

# %%
# Depthwise-separable convolution
# -------------------------------
# A depthwise step filters each channel in space; a pointwise step then mixes the channels. Together
# they map ``c_in`` channels to ``c_out`` like a standard ``k x k`` convolution, with
# ``k * k * c_in + c_in * c_out`` weights instead of ``k * k * c_in * c_out``. The two blog posts'
# examples, without biases:
for c_in, c_out in ((3, 4), (16, 32)):
    standard = k * k * c_in * c_out
    separable = k * k * c_in + c_in * c_out
    print(
        f"{c_in} -> {c_out}: standard {k}*{k}*{c_in}*{c_out} = {standard}, "
        f"separable {k}*{k}*{c_in} + {c_in}*{c_out} = {separable}"
    )
    assert count_params(nn.Conv2d(c_in, c_out, k, bias=False)) == standard
    assert count_params(SeparableConv2d(c_in, c_out, k, bias=False)) == separable
    assert arithmetic.separable_params(c_in, c_out, k, bias=False) == separable
assert (standard, separable) == (4608, 656)

# %%
# Multiply-adds follow the same pattern, once per output pixel: a standard convolution spends
# ``k * k * c_in * c_out`` MACs on each of the ``H' x W'`` output pixels, the separable one
# ``k * k * c_in + c_in * c_out``. The ratio of the two is ``1 / c_out + 1 / k**2``: with 3 x 3 kernels
# the separable layer is at best 9 times cheaper. The lesson's exercise maps a 3 x 128 x 128 image to 10
# channels with 3 x 3 kernels and no padding, so the output is 126 x 126 (128 - 3 + 1).
c_in, c_out, size = 3, 10, 128
out_size = size - k + 1
standard_macs = out_size * out_size * k * k * c_in * c_out
separable_macs = out_size * out_size * (k * k * c_in + c_in * c_out)
ratio = separable_macs / standard_macs
print(f"output {out_size}x{out_size}")
print(f"standard:  {out_size}**2 * {k}*{k}*{c_in}*{c_out} = {standard_macs:,}")
print(f"separable: {out_size}**2 * ({k}*{k}*{c_in} + {c_in}*{c_out}) = {separable_macs:,}")
print(f"ratio {ratio:.4f} = 1/{c_out} + 1/{k * k}")

layer = SeparableConv2d(c_in, c_out, k)
summary = summarize(layer, (1, c_in, size, size))
assert arithmetic.conv_output_size(size, k) == out_size
assert layer(batch).shape == (1, c_out, out_size, out_size)
assert summary.total_macs == separable_macs
assert separable_macs == arithmetic.separable_macs(c_in, c_out, k, out_size)
# The bias sits on the pointwise step: c_out more parameters.
assert summary.total_params == k * k * c_in + c_in * c_out + c_out
standard_summary = summarize(nn.Conv2d(c_in, c_out, k), (1, c_in, size, size))
assert standard_summary.total_macs == standard_macs
assert standard_macs == arithmetic.conv_macs(c_in, c_out, k, out_size)
assert abs(ratio - arithmetic.separable_cost_ratio(c_out, k)) < 1e-12

# %%
# A reader of the lesson asked how to get a layer's computation for a whole batch: every image costs
# the same, so a batch of N costs N times one image. ``summarize`` counts what actually runs, for the
# input shape you give it:
print(summary)
assert summarize(layer, (8, c_in, size, size)).total_macs == 8 * separable_macs

# %%
# Is it really a depthwise then a pointwise convolution? Build the same computation from two plain
# ``nn.Conv2d`` layers with sepconv's weights and compare the outputs, within the rounding bound of the
# pointwise section: each output sums ``k * k`` products (depthwise), then ``c_in`` products and a bias
# (pointwise), and the magnitudes are those of the same network run on ``|x|`` with ``|weights|``.
plain_depthwise = nn.Conv2d(c_in, c_in, k, groups=c_in, bias=False)
plain_pointwise = nn.Conv2d(c_in, c_out, 1)
with torch.no_grad():
    plain_depthwise.weight.copy_(layer.depthwise.weight)
    plain_pointwise.weight.copy_(layer.pointwise.weight)
    plain_pointwise.bias.copy_(layer.pointwise.bias)
    ours = layer(batch)
    theirs = plain_pointwise(plain_depthwise(batch))
    magnitudes = F.conv2d(
        F.conv2d(batch.abs(), layer.depthwise.weight.abs(), groups=c_in),
        layer.pointwise.weight.abs(),
        layer.pointwise.bias.abs(),
    )
bound = rounding_bound(k * k + c_in + 1, magnitudes)
difference = (ours - theirs).abs()
print(f"largest difference {difference.max():.2e}, smallest bound {bound.min():.2e}")
assert (difference <= bound).all()

# %%
# The separable convolution as sepconv animates it (``sepconv animate --separable``): first the
# depthwise step, each channel on its own, then the pointwise step, every output reading all the
# depthwise outputs through a 1 x 1 window.
geometry = dict(in_channels=2, out_channels=2, separable=True, input_size=4)
animation = animate_conv("separable_conv.gif", **geometry)
print([(step.name, len(step.frames)) for step in animation.steps])
assert [len(step.frames) for step in animation.steps] == [2 * 2 * 2, 2 * 2 * 2]

# %%
# ``sepconv.viz.diagram`` draws the same connections as blocks (one colour per group), with the
# counts of each step from ``sepconv.arithmetic`` for a 56 x 56 output; here the blog's 3 -> 4 layer.
figure, plan = diagram("separable", in_channels=3, out_channels=4, input_size=56)
figure.savefig("separable_diagram.png", dpi=80)
assert plan.total_params == 39 and plan.standard_params == 108
assert plan.total_macs == 56 * 56 * 39  # stride 1, 'same' padding: 56 x 56 outputs

# %%
# Every form at once
# ------------------
# ``arithmetic.convolution_costs`` (the ``sepconv calc`` command) lays out one layer done every way:
# standard, each valid group count, and separable. For the 16 -> 32 layer on a 56 x 56 input with
# 'same' padding:
costs = arithmetic.convolution_costs(16, 32, 3, 56, bias=False)
print(f"{'form':<14}{'groups':>7}{'params':>9}{'MACs':>13}{'vs standard':>13}")
for row in costs.rows:
    groups = "-" if row.groups is None else row.groups
    counts = f"{row.params:>9,}{row.macs:>13,}{row.macs_ratio:>13.4f}"
    print(f"{row.kind:<14}{groups:>7}{counts}")
assert costs.rows[0].params == 4608 and costs.rows[-1].params == 656
assert costs.rows[-1].macs == 56 * 56 * 656
assert [row.groups for row in costs.rows[:-1]] == [1, 2, 4, 8, 16]

# %%
# Fewer MACs do not translate one-for-one into speed: a depthwise layer does little arithmetic for
# each byte it reads, so it tends to wait on memory rather than on the multipliers.
#
# Next, :ref:`sphx_glr_auto_tutorials_tut_02_output_size_dilation_receptive_field.py` works out
# how large each output is and how much of the input one output value sees, and
# :ref:`sphx_glr_auto_tutorials_tut_03_inverted_residual.py` puts depthwise and pointwise
# convolutions together into MobileNetV2's block.
