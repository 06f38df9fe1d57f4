"""
Convert a trained CNN, deploy it, benchmark it, optimize it for this machine
============================================================================

You have a trained standard CNN. Retraining a separable one from scratch costs as much as the first
training; instead, sepconv *converts* it: each k x k convolution is split into a depthwise and a
pointwise one computed from its own learned filters (an SVD per input channel), exact at full rank
and the best approximation below. Then we deploy it (ONNX, verified, int8), time it on this machine
and let sepconv's planner choose which layers to convert from measured costs.

Everything runs on a small model and a few hundred images so that the page builds in seconds; the
first training step on a machine compiles sepconv's C++ training kernels once (about a minute).
Timings are measured while the page is built and depend on the machine: run the script to see
yours.
"""

# %%
# A trained standard CNN
# ----------------------
#
# A narrow ``standard_cnn`` (the demo's standard twin at half width), trained briefly with
# :func:`sepconv.train.fit` on 640 of the embedded digits.

import dataclasses
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from sepconv.data import load_dataset
from sepconv.train import TrainConfig, fit
from sepconv.train.evaluation import evaluate_model

work = Path(tempfile.mkdtemp(prefix="sepconv-tut06-"))
splits = load_dataset("mnist5k", seed=0)
data = dataclasses.replace(
    splits,
    train=splits.train.subset(torch.arange(0, 3500, 3500 / 640).long()),
    test=splits.test.subset(torch.arange(0, 1000, 2)),
)
widths = [16, 32, 64, 128]
config = TrainConfig(
    model="standard_cnn",
    model_kwargs={"widths": widths},
    epochs=2,
    batch_size=32,
    out_dir=str(work / "standard"),
    progress_bar=False,
    tensorboard=False,
)
trained = fit(config, data=data)
model = trained.model.eval()
print(f"standard_cnn (widths {widths}): test accuracy {trained.test_accuracy:.1%}")


def test_accuracy(candidate):
    return evaluate_model(candidate, data.test, num_classes=10).accuracy


test_images = torch.stack([data.test[index][0] for index in range(64)])
train_images = torch.stack([data.train[index][0] for index in range(256)])

# %%
# Convert at full rank: nothing lost
# ----------------------------------
#
# :func:`sepconv.convert.to_separable` replaces each standard convolution (not the stem: with one
# input channel it has nothing to gain) by a :class:`~sepconv.layers.SeparableConv2d` with
# ``depth_multiplier = r`` filters per input channel. A 3x3 filter bank of one input channel is a
# matrix of C_out rows and 9 columns: its rank is at most min(C_out, 9) = 9 here, so at r = 9 the
# split is exact (and, at these widths, not smaller). The report lists each layer's rank, costs and
# errors.

from sepconv.convert import recalibrate_batchnorm, to_separable

exact, report = to_separable(model, depth_multiplier=9, exclude="features.0.*", calibration=test_images)
print(report)
with torch.no_grad():
    difference = (exact(test_images) - model(test_images)).abs().max().item()
    scale = model(test_images).abs().max().item()
print(f"largest logit difference at full rank: {difference:.2e} (logits up to {scale:.1f})")
assert difference < 1e-4 * scale

# %%
# Convert at r = 1: 8x fewer MACs, then BatchNorm re-estimated
# ------------------------------------------------------------
#
# At r = 1 each layer keeps only the strongest spatial filter per input channel. Check one layer by
# hand: ``features.1.0`` maps 16 channels to 32 at 28x28 with a 3x3 kernel: 28 x 28 x 16 x 32 x 9 =
# 3,612,672 MACs before; after, a depthwise 3x3 (28 x 28 x 16 x 9) plus a pointwise 16 to 32
# (28 x 28 x 16 x 32): 514,304.

separable, report = to_separable(model, depth_multiplier=1, exclude="features.0.*", calibration=test_images)
first = report.layers[0]
print(
    f"{first.name}: {first.macs_before:,} -> {first.macs_after:,} MACs, output error {first.output_error:.1%}"
)
assert first.name == "features.1.0"
assert (first.macs_before, first.macs_after) == (28 * 28 * 16 * 32 * 9, 28 * 28 * 16 * 9 + 28 * 28 * 16 * 32)
print(f"whole model: {report.total_macs_before:,} -> {report.total_macs_after:,} MACs")

# %%
# Right after conversion the BatchNorm layers still hold statistics of the old layers' outputs.
# Re-estimating them on a few hundred *training* images
# (:func:`~sepconv.convert.recalibrate_batchnorm`) recovers much of the accuracy without any
# training; a short fine-tuning (``sepconv train --init-from``) recovers the rest.

accuracies = {"original": trained.test_accuracy, "r=1": test_accuracy(separable)}
recalibrate_batchnorm(separable, train_images)
accuracies["r=1, BN re-estimated"] = test_accuracy(separable)
for name, value in accuracies.items():
    print(f"{name:>22}: test accuracy {value:.1%}")

# %%
# Deploy: ONNX, verified, and int8
# --------------------------------
#
# :func:`sepconv.deploy.export_onnx` folds every BatchNorm into the convolution before it, exports
# with a dynamic batch, stores the normalization and class names in the file, and *verifies* it:
# ONNX Runtime and PyTorch run the same images and the file is only written if they agree.
# :class:`~sepconv.deploy.OnnxModel` then runs the file like a model.
# :func:`~sepconv.deploy.quantize_onnx` writes an int8 copy calibrated on real training images.

from sepconv.deploy import OnnxModel, export_onnx, onnx_accuracy, quantize_onnx

metadata = {"mean": data.mean, "std": data.std, "class_names": data.class_names, "dataset": data.name}
exported = export_onnx(separable, work / "model.onnx", inputs=test_images[:16], metadata=metadata)
print(
    f"{exported.path.name}: {exported.file_bytes:,} bytes, BatchNorms folded: {len(exported.folded_batchnorms)}, "
    f"largest difference from PyTorch {exported.max_abs_diff:.1e}"
)
deployed = OnnxModel(exported.path, threads=torch.get_num_threads())
with torch.no_grad():
    agree = (deployed(test_images).argmax(1) == separable(test_images).argmax(1)).float().mean().item()
print(f"ONNX Runtime and PyTorch agree on {agree:.0%} of the test images' classes")
assert agree == 1.0

int8_path = quantize_onnx(exported.path, work / "model.int8.onnx", [train_images[:128], train_images[128:]])
deployed_accuracy = {
    "fp32": onnx_accuracy(exported.path, data.test),
    "int8": onnx_accuracy(int8_path, data.test),
}
print(f"as deployed: fp32 {deployed_accuracy['fp32']:.1%}, int8 {deployed_accuracy['int8']:.1%}")

# %%
# The fp32 file computes what PyTorch computes. int8 rounds every weight and activation to 256
# levels; a model converted at r = 1 and not fine-tuned is fragile, and int8 may cost it much more
# than it costs a trained one. Always measure it, as ``sepconv export --int8`` does (it warns past
# one point lost).
assert deployed_accuracy["fp32"] == accuracies["r=1, BN re-estimated"]

# %%
# Benchmark
# ---------
#
# :func:`sepconv.timing.time_interleaved` is the timer behind ``sepconv bench`` and ``compare``:
# after a warm-up it runs the callables in interleaved rounds (A, B, C, A, B, C, ...), so a change
# in the machine's load hits them alike, and reports medians. One image at a time:

from sepconv.timing import TimingPlan, time_interleaved

image = test_images[:1]
int8_model = OnnxModel(int8_path, threads=torch.get_num_threads())
original_onnx = export_onnx(model, work / "original.onnx", inputs=test_images[:16], metadata=metadata)
original_deployed = OnnxModel(original_onnx.path, threads=torch.get_num_threads())


def eager(candidate):
    def call():
        with torch.no_grad():
            return candidate(image)

    return call


timings = time_interleaved(
    {
        "original, PyTorch": eager(model),
        "r=1, PyTorch": eager(separable),
        "original, ONNX Runtime": lambda: original_deployed(image),
        "r=1, ONNX Runtime": lambda: deployed(image),
        "r=1, ONNX Runtime int8": lambda: int8_model(image),
    },
    TimingPlan(warmup_calls=3, min_rounds=5, min_run_seconds=0.3),
)
for name, timing in timings.items():
    print(f"{name:>24}: {timing.median_ms:.3f} ms (spread {timing.spread_ms:.3f})")

figure, axis = plt.subplots(figsize=(7, 3))
axis.barh(list(timings), [timing.median_ms for timing in timings.values()])
axis.invert_yaxis()
axis.set(xlabel="ms per image (median)", title="batch 1, measured while this page was built")
figure.tight_layout()

# %%
# Optimize for this machine: the planner on measured costs
# --------------------------------------------------------
#
# Converting every layer at r = 1 is blind: what a layer gains depends on the engine, the batch and
# the CPU. ``sepconv optimize`` measures instead. Its stages are public:
#
# 1. :func:`~sepconv.optimize.sites.find_sites`: the layers that may change, with their candidate
#    ranks;
# 2. :func:`~sepconv.optimize.costs.measure_costs`: each candidate timed alone in the engine (here
#    ONNX Runtime, batch 1), kept in a cost table;
# 3. :func:`~sepconv.optimize.sensitivity.measure_sensitivity`: what each candidate loses (here the
#    layer's output error on test images; with validation labels, accuracy points);
# 4. :func:`~sepconv.optimize.planner.pareto_front` and
#    :func:`~sepconv.optimize.planner.choose_plan`: the plans that no other beats on both predicted
#    latency and predicted loss, and the one that meets a budget.
#
# The full command also applies the plan, fine-tunes, exports and measures again
# (:func:`~sepconv.optimize.run.optimize_model`); that takes minutes, so here we stop at the plan.

from sepconv.deploy import get_engine
from sepconv.optimize.costs import CostTable, measure_costs
from sepconv.optimize.planner import BudgetError, LatencyModel, choose_plan, pareto_front
from sepconv.optimize.sensitivity import loss_options, measure_sensitivity
from sepconv.optimize.sites import find_sites

engine = get_engine("ort")
threads = torch.get_num_threads()
sites, skipped = find_sites(model, (1, 28, 28), include_stem=False)
print("sites:", {site.name: site.ranks for site in sites})
quick = TimingPlan(warmup_calls=2, min_rounds=5, min_run_seconds=0, min_block_seconds=0.002, settle_seconds=0)
costs = measure_costs(
    model,
    sites,
    engine,
    batch_size=1,
    threads=threads,
    table=CostTable(work / "costs.json"),
    timing_plan=quick,
)
_, sensitivity = measure_sensitivity(model, sites, calibration=test_images, table=None)
layers = loss_options(sites, costs, sensitivity, base_accuracy=None)
original_ms = timings["original, ONNX Runtime"].median_ms  # measured above, end to end
latency = LatencyModel.from_reference(original_ms, layers)
front = pareto_front(layers, latency)
print(f"original: {original_ms:.3f} ms end to end; {len(front)} plans on the Pareto front")
for plan in front[:: max(1, len(front) // 6)]:
    print(f"  {plan.predicted_ms:.3f} ms, loss {plan.predicted_loss:.3f}: {plan.converted}")

# %%
# Ask for a plan twice as fast as the original, with the least predicted loss. The prediction comes
# from layers timed alone; ``sepconv optimize`` then measures the chosen plan end to end and, when
# it misses, refits the latency model on what it measured and plans again.

try:
    plan = choose_plan(layers, latency, max_ms=original_ms / 2, loss_unit="relative output error")
    print(f"chosen: {plan.converted}, predicted {plan.predicted_ms:.3f} ms")
except BudgetError as refusal:
    print("no plan reaches 2x here:", refusal)

figure, axis = plt.subplots(figsize=(6, 3.5))
axis.plot([plan.predicted_ms for plan in front], [plan.predicted_loss for plan in front], "o-")
axis.axvline(original_ms / 2, color="gray", linestyle="--", label="budget: 2x faster")
axis.set(
    xlabel="predicted ms per image (ONNX Runtime)",
    ylabel="predicted loss (sum of output errors)",
    title="the Pareto front on this machine",
)
axis.legend()
figure.tight_layout()

# %%
# On the command line the whole route is::
#
#     sepconv convert runs/std/model.safetensors --depth-multiplier 1 --exclude 'features.0.*' \
#         --recalibrate-bn 512 --out sep.safetensors
#     sepconv export sep.safetensors --onnx sep.onnx --int8 --calibration mnist5k
#     sepconv bench sep.safetensors --batch-sizes 1,16
#     sepconv optimize runs/std --engine ort --speedup 3 --out runs/fast
