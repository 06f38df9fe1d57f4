"""
MobileNetV2's inverted residual
===============================

MobileNetV2 is built from one block repeated 17 times: the *inverted residual with a linear
bottleneck*. A 1 x 1 convolution first *expands* a thin tensor (say 24 channels) to six times as
many channels, a 3 x 3 depthwise convolution filters them in space, and a second 1 x 1 convolution
*projects* them back down, with no activation after it. When the block keeps the shape, its input
is added to its output. A ResNet bottleneck goes wide, narrow, wide; this block goes narrow, wide,
narrow: hence "inverted".

We build one with ``sepconv.layers.InvertedResidual``, count its parameters and multiply-adds by
hand, check that it is interchangeable with torchvision's block, see numerically why the projection
has no ReLU, and compare the cost of the whole network with torchvision's. The tutorial follows the
course's MobileNetV2 blog post (the inverted residual block and its expansion ratio) and builds on
the depthwise and pointwise counts of
:ref:`sphx_glr_auto_tutorials_tut_01_groups_depthwise_pointwise.py`.

Run as a script, it writes its pictures (PNG figures) into the current folder.
"""

# %%
# Build one block
# ---------------
# MobileNetV2's third stage works on 56 x 56 feature maps with 24 channels and an expansion ratio of 6,
# so its blocks widen 24 channels to 144 and come back to 24. With stride 1 and equal channel counts,
# the residual connection is used.
import torch
import torchvision
from matplotlib.figure import Figure
from torch import nn

from sepconv.analysis import summarize
from sepconv.layers import InvertedResidual
from sepconv.models import mobilenet_v2
from sepconv.viz import diagram

torch.manual_seed(0)
c, t, size = 24, 6, 56
block = InvertedResidual(c, c, stride=1, expand_ratio=t)
print(block)
assert block.use_res_connect

# %%
# Count it by hand
# ----------------
# The convolutions have no bias (a BatchNorm follows each); every BatchNorm has two learned vectors,
# a scale and a shift, one value per channel (its running mean and variance are buffers, not
# parameters). With ``h = t * c = 144`` hidden channels:
h = t * c
expand = c * h  # 1 x 1, c -> h
expand_bn = 2 * h
depthwise = 3 * 3 * h  # one 3 x 3 filter per hidden channel
depthwise_bn = 2 * h
project = h * c  # 1 x 1, h -> c, linear
project_bn = 2 * c
params = expand + expand_bn + depthwise + depthwise_bn + project + project_bn
print(f"expand {expand} + {expand_bn}, depthwise {depthwise} + {depthwise_bn}")
print(f"project {project} + {project_bn}")
print(f"parameters: {params}")

# %%
# Multiply-adds: each convolution costs its weights once per output pixel, and at stride 1 every
# output is 56 x 56 (BatchNorm, ReLU6 and the residual addition are not multiply-adds of a
# convolution and are not counted, the usual convention).
pixels = size * size
macs = pixels * (expand + depthwise + project)
print(f"MACs: {size}*{size}*({expand} + {depthwise} + {project}) = {macs:,}")

summary = summarize(block, (1, c, size, size))
print(summary)
assert summary.total_params == params == 8832
assert sum(parameter.numel() for parameter in block.parameters()) == params
assert summary.total_macs == macs == 25_740_288
assert [row.macs for row in summary.layers if row.macs] == [
    pixels * expand,
    pixels * depthwise,
    pixels * project,
]

# %%
# With stride 2 the depthwise step halves the map, and the projection then runs on 28 x 28 pixels
# only; the shapes differ, so there is no residual.
strided = InvertedResidual(c, 32, stride=2, expand_ratio=t).eval()
strided_macs = pixels * expand + (size // 2) ** 2 * (depthwise + h * 32)
with torch.no_grad():
    output = strided(torch.randn(1, c, size, size))
print("stride 2:", tuple(output.shape), f"MACs {strided_macs:,}")
assert not strided.use_res_connect and output.shape == (1, 32, size // 2, size // 2)
assert summarize(strided, (1, c, size, size)).total_macs == strided_macs

# %%
# ``sepconv.viz.diagram`` draws the block's channel connections with the counts of each step (here
# a smaller block, 4 channels expanded 6 times (the default), so that every channel fits).
figure, plan = diagram("inverted-residual", in_channels=4, out_channels=4)
figure.savefig("inverted_residual_diagram.png", dpi=70)
assert [step.params for step in plan.steps] == [4 * 24, 3 * 3 * 24, 24 * 4]

# %%
# The same block as torchvision's
# -------------------------------
# sepconv lays the block out like torchvision's ``InvertedResidual`` (``conv.0`` expansion, ``conv.1``
# depthwise, ``conv.2`` projection, ``conv.3`` its BatchNorm), so the two have the same state_dict
# keys and shapes and weights move between them unchanged. Give torchvision's block non-trivial
# BatchNorm statistics, load its weights into sepconv's, and run both in eval mode.
TorchvisionBlock = torchvision.models.mobilenetv2.InvertedResidual
reference = TorchvisionBlock(c, c, stride=1, expand_ratio=t)
with torch.no_grad():
    for module in reference.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.uniform_(0.5, 1.5)
            module.bias.uniform_(-0.5, 0.5)
theirs = {key: value.shape for key, value in reference.state_dict().items()}
ours = {key: value.shape for key, value in block.state_dict().items()}
assert theirs == ours
block.load_state_dict(reference.state_dict())
block.eval()
reference.eval()
x = torch.randn(2, c, size, size)
with torch.no_grad():
    same = torch.equal(block(x), reference(x))
reference_params = sum(parameter.numel() for parameter in reference.parameters())
print(f"torchvision's block: {reference_params} parameters; same output: {same}")
assert reference_params == params
# In eval mode both run the same PyTorch operators in the same order, so the outputs are identical.
assert same

# %%
# Why the bottleneck is linear
# ----------------------------
# Why no ReLU6 after the projection? The MobileNetV2 argument: a ReLU zeroes every negative
# coordinate, and in a space with few dimensions that destroys information, because many different
# inputs end up at the same output. With many dimensions the information survives somewhere else.
# The block's thin tensors (24 channels) are where its information lives, so they are left linear;
# the ReLU6 acts only in the wide (144-channel) expansion.
#
# A small experiment shows it. Take a point ``x`` of a plane, map it into ``n`` dimensions by a random
# ``n x 2`` matrix ``T``, apply ReLU, and ask whether ``x`` can still be recovered. The output keeps
# exactly the coordinates of ``T x`` that are positive, so ``x`` can be recovered when those rows of
# ``T`` still span the plane, that is when at least two of them are positive (two random rows are
# independent). Otherwise ``x`` is lost: a whole region of the plane gives the same output.
#
# By hand: for a random ``T`` each coordinate of ``T x`` is positive with probability 1/2, independently
# of the others, so the chance that fewer than two survive is ``(1 + n) / 2**n``: 75% for ``n = 2``,
# 50% for 3, 19% for 5, and about 3 in 100 million for 30. A simulation with a new random ``T`` for each
# of 20,000 points agrees, to within its sampling error (a standard deviation of at most 0.4%).
generator = torch.Generator().manual_seed(0)
dimensions = (2, 3, 5, 30)
samples = 20_000
points = torch.randn(samples, 2, generator=generator)
lost = {}
for n in dimensions:
    by_hand = (1 + n) / 2**n
    projections = torch.randn(samples, n, 2, generator=generator)
    positive = (projections @ points.unsqueeze(2)).squeeze(2) > 0
    lost[n] = (positive.sum(dim=1) < 2).float().mean().item()
    print(f"n = {n:>2}: lost by hand {by_hand:.3g}, simulated {lost[n]:.3g}")
    assert abs(lost[n] - by_hand) < 0.02
assert lost[2] > lost[3] > lost[5] > lost[30]

# %%
# To see what the loss looks like, send a spiral through one random ``T`` for each ``n`` and solve back
# from the surviving coordinates (least squares on the positive rows, exact when two or more survive).
# With 2 or 3 dimensions whole arcs collapse onto a line or onto the origin; with 30 the spiral comes
# back intact.
angles = torch.linspace(0.5, 4 * torch.pi, 400)
radius = angles / (4 * torch.pi)
spiral = torch.stack([radius * torch.cos(angles), radius * torch.sin(angles)], dim=1)


def recover_after_relu(points: torch.Tensor, dimension: int) -> torch.Tensor:
    """Map ``points`` (N x 2) into ``dimension`` dims at random, ReLU, solve back."""
    projection = torch.randn(dimension, 2, generator=generator)
    kept = torch.relu(points @ projection.T)
    recovered = torch.zeros_like(points)
    for index, rows in enumerate(kept > 0):
        if rows.any():  # the component of the point along the surviving rows
            target = kept[index, rows].unsqueeze(1)
            solution = torch.linalg.lstsq(projection[rows], target).solution
            recovered[index] = solution.squeeze(1)
    return recovered


recovered = {n: recover_after_relu(spiral, n) for n in dimensions}
errors = {n: (recovered[n] - spiral).norm(dim=1).mean().item() for n in dimensions}
print({n: round(error, 3) for n, error in errors.items()})
assert errors[30] < 1e-4 < errors[2]

figure = Figure(figsize=(9, 2.6), layout="constrained")
for axes, n in zip(figure.subplots(1, len(dimensions)), dimensions):
    axes.plot(spiral[:, 0], spiral[:, 1], color="0.85", linewidth=3)
    axes.scatter(*recovered[n].T, s=3, c=angles, cmap="viridis", zorder=3)
    axes.set_title(f"n = {n}")
    axes.set_aspect("equal")
    axes.set_axis_off()
figure.savefig("relu_information_loss.png", dpi=80)

# %%
# In the real block the projection's outputs are signed, and a ReLU there would zero every negative
# one, in a space of only 24 channels. With the weights loaded above, that would be:
with torch.no_grad():
    projected = block.conv(x)  # the block's branch, before the residual addition
negative = (projected < 0).float().mean().item()
print(f"a ReLU here would zero {100 * negative:.0f}% of the projection's outputs")
assert 0.3 < negative < 0.7

# %%
# The whole network
# -----------------
# ``sepconv.models.mobilenet_v2`` stacks these blocks as the paper and torchvision do, with the same
# state_dict. Its cost at 224 x 224 equals torchvision's to the last parameter and multiply-add.
# ``summarize(..., device="meta")`` counts without computing anything: the model runs on PyTorch's
# ``meta`` device, where tensors have shapes but no values.
# weights=None: random weights, nothing downloaded
reference_model = torchvision.models.mobilenet_v2(weights=None)
ours = summarize(mobilenet_v2(), (1, 3, 224, 224), device="meta")
theirs = summarize(reference_model, (1, 3, 224, 224), device="meta")
print(f"sepconv:     {ours.total_params:,} parameters, {ours.total_macs:,} MACs")
print(f"torchvision: {theirs.total_params:,} parameters, {theirs.total_macs:,} MACs")
assert (ours.total_params, ours.total_macs) == (theirs.total_params, theirs.total_macs)
assert (ours.total_params, ours.total_macs) == (3_504_872, 300_774_272)
