"""
Standard vs separable: the demo, explained
==========================================

``sepconv demo`` trains two *twins* on the embedded digits with one recipe and the same seed: a
small standard CNN and the same network with every 3x3 convolution after the stem made
depthwise-separable. It then measures both. On the machine the README quotes, the separable twin
has 8x fewer parameters and MACs, yet runs only about 1.5x faster in eager PyTorch at batch 1, and
3-5x faster once deployed in ONNX Runtime.

This tutorial rebuilds the demo piece by piece, smaller (one short epoch on a subset), and asks
the question the table raises: **if the work shrinks 8x, where does the time go?** The cost
formulas are those of the course's blog post on depthwise and pointwise convolution
(``blog-dw-pw-group-params.txt`` in the course material); here the library counts them and we
check it by hand.

The first training step on a machine compiles sepconv's C++ training kernels once (about a
minute). All timings on this page were measured while the page was built, on whatever machine built
it: they show the shape of the answer, not what your machine will measure. Run the script to see
yours.
"""

# %%
# The twins
# ---------
#
# :mod:`sepconv.demo` names the twins: ``standard_cnn`` and ``separable_cnn``. Both are a 3x3 stem,
# five 3x3 blocks over three resolutions (28, 14 and 7 pixels, with 2x2 max pooling between), global
# average pooling and a linear head. Only the blocks differ: a standard block is
# ``Conv2d(3x3) - BatchNorm - ReLU``; a separable block is a depthwise 3x3 convolution (one filter per
# channel) and a pointwise 1x1 convolution (mixing channels), each followed by BatchNorm and ReLU.

import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import torch

import sepconv
from sepconv import arithmetic
from sepconv.analysis import summarize
from sepconv.demo import DEMO_MODELS

print(DEMO_MODELS)
torch.manual_seed(0)
twins = {role: sepconv.create_model(name) for role, name in DEMO_MODELS.items()}
print("standard block: ", twins["standard"].features[1])
print("separable block:", twins["separable"].features[1])

# %%
# Parameters and MACs, layer by layer
# -----------------------------------
#
# :func:`~sepconv.analysis.summarize` runs one 28x28 image through each twin and counts every
# layer's parameters and multiply-accumulates (MACs).

summaries = {role: summarize(model, (1, 1, 28, 28)) for role, model in twins.items()}
for role, summary in summaries.items():
    print(f"{DEMO_MODELS[role]:>14}: {summary.total_params:>9,} parameters {summary.total_macs:>12,} MACs")
rows = {role: {row.name: row for row in summary.layers} for role, summary in summaries.items()}

# %%
# Check the first block by hand. It maps 32 channels to 64 at 28x28, with a 3x3 kernel and no bias
# (BatchNorm follows).
#
# - Standard: each of the 64 filters has 3 x 3 x 32 = 288 weights, so 64 x 288 = 18,432 parameters;
#   each weight is used once per output pixel, so 28 x 28 x 18,432 = 14,450,688 MACs.
# - Depthwise: 32 filters of 3 x 3 = 288 parameters; 28 x 28 x 288 = 225,792 MACs.
# - Pointwise: 32 x 64 = 2,048 parameters; 28 x 28 x 2,048 = 1,605,632 MACs.
#
# Together 2,336 parameters instead of 18,432: the ratio is 1/64 + 1/9 (one over the output
# channels plus one over the kernel's area), about 1/7.9.

standard_conv = rows["standard"]["features.1.0"]
depthwise = rows["separable"]["features.1.depthwise.0"]
pointwise = rows["separable"]["features.1.pointwise.0"]
print(f"standard  features.1:  {standard_conv.params:>6,} parameters {standard_conv.macs:>11,} MACs")
print(f"depthwise features.1:  {depthwise.params:>6,} parameters {depthwise.macs:>11,} MACs")
print(f"pointwise features.1:  {pointwise.params:>6,} parameters {pointwise.macs:>11,} MACs")
assert (
    (standard_conv.params, standard_conv.macs)
    == (3 * 3 * 32 * 64, 28 * 28 * 3 * 3 * 32 * 64)
    == (18_432, 14_450_688)
)
assert (depthwise.params, depthwise.macs) == (3 * 3 * 32, 28 * 28 * 3 * 3 * 32) == (288, 225_792)
assert (pointwise.params, pointwise.macs) == (32 * 64, 28 * 28 * 32 * 64) == (2_048, 1_605_632)
assert depthwise.macs + pointwise.macs == arithmetic.separable_macs(32, 64, 3, output_size=28)
ratio = standard_conv.macs / (depthwise.macs + pointwise.macs)
print(
    f"standard / separable MACs for this block: {ratio:.2f} (1 / (1/64 + 1/9) = {1 / (1 / 64 + 1 / 9):.2f})"
)
assert abs(ratio - 1 / (1 / 64 + 1 / 9)) < 1e-9

# %%
# The same holds for every block: the figure shows each block's MACs in both twins. The stem and
# the head are identical in both; the blocks are where the 8x goes.


def block_of(name):
    """``features.3.pointwise.0`` -> ``features.3``: the block a layer belongs to."""
    parts = name.split(".")
    return ".".join(parts[:2]) if parts[0] == "features" else parts[0]


def macs_per_block(summary):
    totals = {}
    for row in summary.layers:
        if row.macs and not any(other.name.startswith(row.name + ".") for other in summary.layers):
            totals[block_of(row.name)] = totals.get(block_of(row.name), 0) + row.macs
    return totals


block_macs = {role: macs_per_block(summary) for role, summary in summaries.items()}
for role, summary in summaries.items():
    assert sum(block_macs[role].values()) == summary.total_macs
blocks = list(block_macs["standard"])
positions = torch.arange(len(blocks), dtype=torch.float32)
figure, axis = plt.subplots(figsize=(8, 3.2))
axis.bar(positions - 0.2, [block_macs["standard"][b] / 1e6 for b in blocks], 0.4, label="standard_cnn")
axis.bar(positions + 0.2, [block_macs["separable"][b] / 1e6 for b in blocks], 0.4, label="separable_cnn")
axis.set_xticks(positions.tolist(), blocks)
axis.set(ylabel="million MACs per image", title="MACs per block (one 28x28 image)")
axis.legend()
figure.tight_layout()

# %%
# A short training of both
# ------------------------
#
# The demo trains both twins with :func:`sepconv.demo.demo_config`: the same data, seed, optimizer
# (AdamW), one-cycle schedule and label smoothing; only the model differs. We use that recipe as
# is, on 320 training images for one epoch (the demo: 3,500 images, 5 epochs), through
# :func:`sepconv.train.fit`.

import dataclasses

from sepconv.data import load_dataset
from sepconv.demo import demo_config
from sepconv.train import fit

splits = load_dataset("mnist5k", seed=0)
data = dataclasses.replace(
    splits,
    train=splits.train.subset(torch.arange(0, 3500, 3500 / 320).long()),
    test=splits.test.subset(torch.arange(500)),
)
work = Path(tempfile.mkdtemp(prefix="sepconv-tut05-"))
results = {}
for role, name in DEMO_MODELS.items():
    config = demo_config(
        name, work, dataset=data.name, epochs=1, batch_size=32, lr=4e-3, seed=0, progress=False
    )
    results[role] = fit(config, data=data)
for result in results.values():
    steps = sum(row["step_seconds"] for row in result.history)
    print(
        f"{result.model_name:>14}: test accuracy {result.test_accuracy:.1%}, "
        f"training steps {steps:.2f} s (fused kernels {'on' if result.fused else 'off'})"
    )

# %%
# On a short run, accuracy says little (the demo's 5 epochs bring both above 98%). The training
# steps, forward + backward + update of a batch of 32, already show the pattern of the whole
# page: the separable twin is faster, but by far less than 8x.
#
# Where the time goes, layer by layer
# -----------------------------------
#
# :func:`sepconv.optimize.costs.measure_summary` is the library face of
# ``sepconv summary MODEL --measure torch``: it times every layer *alone*, on an input of the shape
# it sees in the model, and adds the bytes the layer moves (input, output and weights) and its
# arithmetic intensity, MACs per byte. We time each twin at batch 1, in PyTorch eager (channels_last,
# no gradients), with a short timing plan to keep the page fast. The measurements go into a cost
# table in a temporary folder.

from sepconv.deploy import get_engine
from sepconv.optimize.costs import CostTable, measure_summary
from sepconv.timing import TimingPlan

quick = TimingPlan(warmup_calls=2, min_rounds=5, min_run_seconds=0, min_block_seconds=0.002, settle_seconds=0)
threads = torch.get_num_threads()
table = CostTable(work / "costs.json")
measured = {
    role: measure_summary(
        results[role].model.eval(),
        summaries[role],
        get_engine("torch"),
        threads=threads,
        table=table,
        timing_plan=quick,
    )
    for role in twins
}


def leaf_rows(summary):
    """The layers that do the work (no containers), with their measured time."""
    return [row for row in summary.layers if row.measured is not None and row.measured.ms is not None]


for role in ("separable",):
    print(f"{DEMO_MODELS[role]}, batch 1, each layer alone ({threads} threads):")
    print(f"{'layer':<26} {'type':<16} {'MACs':>10} {'ms':>7} {'MACs/byte':>9}")
    for row in leaf_rows(measured[role])[:9]:
        print(
            f"{row.name:<26} {row.type:<16} {row.macs:>10,} {row.measured.ms:>7.4f} "
            f"{row.measured.intensity or 0:>9.2f}"
        )

# %%
# Read the table: a depthwise convolution does 7x fewer MACs than the pointwise one beside it, but
# takes about as long; a BatchNorm or a ReLU does no MACs at all and still takes time. Every layer
# pays a fixed cost (dispatching the operator, allocating the output, starting threads) and a
# memory cost (reading its input, writing its output). A depthwise layer moves as many bytes as it
# computes MACs (intensity around 1-2), so it waits on memory, not on arithmetic.
#
# Summed per kind of layer, for both twins:


def time_by_kind(summary):
    kinds = {}
    for row in leaf_rows(summary):
        kind = {"Conv2d": "standard conv"}.get(row.type, row.type)
        kinds[kind] = kinds.get(kind, 0.0) + row.measured.ms
    return kinds


kind_ms = {role: time_by_kind(measured[role]) for role in twins}
all_kinds = sorted({kind for kinds in kind_ms.values() for kind in kinds})
figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
for axis, role in ((left, "standard"), (right, "separable")):
    ms = [kind_ms[role].get(kind, 0.0) for kind in all_kinds]
    axis.barh(all_kinds, ms)
    axis.set(xlabel="ms (sum of the layers timed alone, batch 1)", title=DEMO_MODELS[role])
figure.suptitle("where the time goes, measured while this page was built")
figure.tight_layout()

conv_ms = {
    role: sum(row.measured.ms for row in leaf_rows(measured[role]) if "Conv" in row.type) for role in twins
}
total_ms = {role: sum(row.measured.ms for row in leaf_rows(measured[role])) for role in twins}
for role in twins:
    print(
        f"{DEMO_MODELS[role]:>14}: convolutions {conv_ms[role]:.3f} ms of {total_ms[role]:.3f} ms "
        f"({conv_ms[role] / total_ms[role]:.0%}); MACs {summaries[role].total_macs:,}"
    )

# %%
# End to end: eager PyTorch, then deployed
# ----------------------------------------
#
# Layers timed alone miss how they run together, so we also time the whole twins, interleaved (a
# round of one, a round of the other, so that a change in the machine's load hits both alike) with
# :func:`sepconv.optimize.costs.time_models`: in PyTorch eager (the ``torch`` engine), and deployed
# the way ``sepconv export`` deploys them (the ``ort`` engine: BatchNorm folded into the
# convolutions, exported to ONNX, verified, run by ONNX Runtime).

from sepconv.optimize.costs import time_models

end_to_end = TimingPlan(warmup_calls=3, min_rounds=5, min_run_seconds=0.3, rotate=True)
trained = {DEMO_MODELS[role]: results[role].model for role in twins}
speedups = {}
for engine in ("torch", "ort"):
    timings = time_models(
        trained, (1, 28, 28), get_engine(engine), batch_size=1, threads=threads, timing_plan=end_to_end
    )
    standard_ms, separable_ms = (timings[name].median_ms for name in DEMO_MODELS.values())
    speedups[engine] = standard_ms / separable_ms
    print(
        f"{engine:>5}, batch 1: standard {standard_ms:.3f} ms, separable {separable_ms:.3f} ms, "
        f"{speedups[engine]:.2f}x faster"
    )
mac_ratio = summaries["standard"].total_macs / summaries["separable"].total_macs
print(f"MAC ratio: {mac_ratio:.2f}x")
assert round(mac_ratio, 2) == 8.04

figure, axis = plt.subplots(figsize=(6, 3))
labels = ["MACs", "eager PyTorch\nbatch 1", "ONNX Runtime\nbatch 1"]
axis.bar(labels, [mac_ratio, speedups["torch"], speedups["ort"]], color=["gray", "C0", "C1"])
axis.axhline(1, color="black", linewidth=0.8)
axis.set(ylabel="standard / separable", title="8x fewer MACs; measured speedups on the build machine")
figure.tight_layout()

# %%
# Why 8x fewer MACs is not 8x faster, and what deployment changes
# ---------------------------------------------------------------
#
# - **Fixed costs per layer.** At batch 1 and 28x28 pixels, each layer does little arithmetic, and
#   eager PyTorch pays for every operator it runs. The separable twin runs *more* operators (two
#   convolutions, two BatchNorms, two ReLUs per block instead of one each), so the fixed costs grow
#   while the MACs shrink.
# - **Memory, not arithmetic.** A depthwise convolution reads and writes as many bytes as it
#   computes; CPUs are built for dense arithmetic (a standard 3x3 convolution reuses each input
#   value hundreds of times from cache). MACs measure arithmetic only.
# - **BatchNorm and ReLU are full passes over memory** in eager mode, and they are the same size in
#   both twins.
#
# Deployment removes much of this: the exporter folds each BatchNorm into the convolution before it
# (a change of weights, no pass at all), ONNX Runtime fuses each ReLU into its convolution and calls
# its kernels with far less overhead per operator than eager PyTorch. What is left is closer to the
# arithmetic, so the MAC ratio shows through more (3-5x on the README's machine). Larger batches help
# eager PyTorch the same way, by spreading each operator's fixed cost over more images.
#
# To see which layers to convert *for your machine* rather than for MACs, ``sepconv optimize``
# measures exactly this, per layer and per rank: the subject of the next tutorial.
