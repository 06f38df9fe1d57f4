"""Training speed: what separable convolutions buy in training time, against what their MACs promise.

Prints, from one process on one machine (every ratio is between timings taken in the same rounds):

1. the demo twins' training step (AdamW as in the demo, batch 64, 1x28x28), standard / separable, per
   execution path: NCHW or channels_last, float32 or bf16 autocast, plain or fused BatchNorm+activation
   kernels (``sepconv.kernels.set_fused``), and torch.compile; the path sepconv picks by default here
   is marked, and each twin's fastest path is compared;
2. ``mobilenet_v2`` (3x32x32, 10 classes, batch 64) images/s with sepconv's default execution against
   the plain tutorial loop (NCHW float32 eager, plain BatchNorm), the same SGD in both;
3. isolated blocks (batch 8, channels_last, float32) at 32@112², 128@56², 256@28², 512@14²: a standard
   3x3 convolution C->C against depthwise 3x3 + pointwise 1x1, forward and forward+backward, and the
   realized speedup divided by the MAC ratio (1.0 = time falls as fast as MACs); then the same blocks
   with BatchNorm + ReLU (``ConvNormAct`` / ``DepthwiseSeparableBlock``, fused);
4. the depthwise 3x3 backward at 32@112² (batch 8, channels_last) against its memory roofline, the
   bandwidth being that of a large tensor copy measured in the same rounds.

    python benchmarks/train_throughput.py [--rounds 10] [--skip-compile] [--json FILE]
    python benchmarks/train_throughput.py --quick     # smoke run, under a minute

Timing: ``sepconv.timing`` warms every callable up, then times them in interleaved rounds (each round
runs a block of a few calls of every path of a section, in an order rotated by one each round, after a
short untimed pause), so a change in the machine's load hits all paths alike; the figure per path is
the median over rounds of its blocks' mean call. bf16
autocast is timed only on CPUs with native bf16 units unless ``--bf16 on`` (emulated bf16 is several
times slower than float32, and would take most of the run).

Memory: by default the whole run keeps freed memory in the process between steps
(``sepconv.train.heap.kept_heap``, glibc only), as ``sepconv.train.fit`` does while it trains; without
it glibc hands large tensors back to the kernel, which maps and zeroes them again at the next step (up
to a third of a step's time on large maps). ``--heap released`` times glibc's start-up behaviour. The
setting is process-wide, so it applies to every path of a section, the baselines included.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sepconv.demo import DEMO_LR
from sepconv.kernels import kernels_available, set_fused
from sepconv.machine import cpu_features, cpu_has_native_bf16, cpu_summary
from sepconv.models import create_model
from sepconv.timing import TimingPlan, time_interleaved
from sepconv.train.heap import kept_heap
from sepconv.train.optim import parameter_groups
from sepconv.train.precision import choose_precision

# The demo's recipe (sepconv.demo.demo_config): AdamW, weight decay 0.05 on weights only,
# label smoothing 0.05. The one-cycle schedule's per-step cost is negligible and left out.
DEMO_WEIGHT_DECAY = 0.05
DEMO_LABEL_SMOOTHING = 0.05
# The tutorial loop's optimizer, used by both mobilenet_v2 runs so that only the execution differs.
SGD_LR = 0.01
SGD_MOMENTUM = 0.9
# (channels, height = width) of the isolated blocks: the shapes of the issue, MobileNet-like stages.
BLOCK_SHAPES: tuple[tuple[int, int], ...] = ((32, 112), (128, 56), (256, 28), (512, 14))
BYTES_PER_FLOAT32 = 4


@dataclass(frozen=True)
class Settings:
    """Sizes and timing of a run; the defaults are the full benchmark (a few minutes on 2 cores)."""

    rounds: int = 10
    calls_per_round: int = 3
    warmup_calls: int = 2
    twin_batch: int = 64
    mobilenet_batch: int = 64
    mobilenet_size: int = 32
    block_batch: int = 8
    block_shapes: tuple[tuple[int, int], ...] = BLOCK_SHAPES
    depthwise_shape: tuple[int, int] = (32, 112)
    depthwise_batch: int = 8
    copy_megabytes: int = 256
    bf16: str = "auto"  # "auto": only with native bf16 units; "on"; "off"
    compile: bool = True
    # "kept": freed memory stays in the process between steps, as in sepconv.train.fit (kept_heap);
    # "released": glibc's start-up behaviour, which maps and zeroes large tensors again every step.
    heap: str = "kept"

    def time_bf16(self) -> bool:
        return self.bf16 == "on" or (self.bf16 == "auto" and cpu_has_native_bf16())


QUICK = Settings(rounds=2, calls_per_round=1, warmup_calls=1, compile=False)


@dataclass(frozen=True)
class TwinPath:
    """One way of running a training step: memory format, precision, fused kernels, compiler."""

    name: str
    label: str
    channels_last: bool
    fused: bool
    bf16: bool = False
    compiled: bool = False


TWIN_PATHS: tuple[TwinPath, ...] = (
    TwinPath("nchw_fp32", "NCHW fp32", channels_last=False, fused=False),
    TwinPath("nchw_fp32_fused", "NCHW fp32 fused", channels_last=False, fused=True),
    TwinPath("channels_last_fp32", "channels_last fp32", channels_last=True, fused=False),
    TwinPath("channels_last_fp32_fused", "channels_last fp32 fused", channels_last=True, fused=True),
    TwinPath("channels_last_bf16", "channels_last bf16 autocast", channels_last=True, fused=False, bf16=True),
    TwinPath(
        "channels_last_bf16_fused",
        "channels_last bf16 autocast fused",
        channels_last=True,
        fused=True,
        bf16=True,
    ),
    # The fused kernels step aside under torch.compile (Inductor sees the plain graph), so one row.
    TwinPath(
        "compiled_channels_last_fp32",
        "torch.compile, channels_last fp32",
        channels_last=True,
        fused=True,
        compiled=True,
    ),
)


# Timing


def interleaved_medians_ms(calls: Mapping[str, Callable[[], object]], settings: Settings) -> dict[str, float]:
    """Median milliseconds per call of each callable, timed in interleaved rounds by ``sepconv.timing``.

    Each round times one block of ``calls_per_round`` calls of every callable; the order is rotated by
    one each round so that no callable always runs right after the same neighbour, and an untimed
    pause before each block lets the previous block's OpenMP threads stop spinning.
    """
    plan = TimingPlan(
        warmup_calls=settings.warmup_calls,
        min_rounds=settings.rounds,
        min_run_seconds=0.0,
        calls_per_block=settings.calls_per_round,
        rotate=True,
    )
    return {name: timing.median_ms for name, timing in time_interleaved(calls, plan).items()}


# 1. The demo twins


def default_execution(model: nn.Module) -> dict[str, bool]:
    """The execution sepconv's training picks for ``model`` on this CPU (the precision rule)."""
    choice = choose_precision(model, on_gpu=False, channels_last="auto", bf16="auto")
    fused = getattr(choice, "fused", None)  # newer rules also decide the fused kernels
    return {
        "channels_last": choice.channels_last,
        "bf16": choice.bf16,
        # Without a field in the rule, training runs fused on the CPU (the blocks' default).
        "fused": True if fused is None else bool(fused),
    }


def twin_step(model_name: str, path: TwinPath, batch_size: int) -> Callable[[], None]:
    """One training step of ``model_name`` on a fixed random batch along ``path``, as a callable."""
    torch.manual_seed(0)
    model = create_model(model_name).train()
    set_fused(model, path.fused)
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(batch_size, 1, 28, 28, generator=generator)
    labels = torch.randint(0, 10, (batch_size,), generator=generator)
    if path.channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(parameter_groups(model, DEMO_WEIGHT_DECAY), lr=DEMO_LR)
    forward = torch.compile(model, dynamic=False) if path.compiled else model

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=path.bf16):
            logits = forward(images)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=DEMO_LABEL_SMOOTHING)
        loss.backward()
        optimizer.step()

    return step


def benchmark_twins(settings: Settings) -> dict[str, Any]:
    """Section 1: standard / separable training step per execution path, and the default path."""
    skipped: dict[str, str] = {}
    calls: dict[str, Callable[[], None]] = {}
    paths = []
    for path in TWIN_PATHS:
        if path.bf16 and not settings.time_bf16():
            skipped[path.name] = (
                "--bf16 off"
                if settings.bf16 == "off"
                else "no native bf16 on this CPU (emulated bf16 is slower; --bf16 on times it)"
            )
            continue
        if path.compiled and not settings.compile:
            skipped[path.name] = "--skip-compile"
            continue
        try:
            for twin in ("standard", "separable"):
                step = twin_step(f"{twin}_cnn", path, settings.twin_batch)
                step()  # compiles on the compiled path; shows a path that cannot run
                calls[f"{twin}/{path.name}"] = step
        # Compiler failures come as many exception types (backend, lowering, C++ build): each means
        # "this path cannot run here", reported with its reason.
        except Exception as error:
            if not path.compiled:
                raise
            calls.pop(f"standard/{path.name}", None)
            skipped[path.name] = f"torch.compile failed: {type(error).__name__}: {str(error).splitlines()[0]}"
            continue
        paths.append(path)
    medians = interleaved_medians_ms(calls, settings)

    defaults = {twin: default_execution(create_model(f"{twin}_cnn")) for twin in ("standard", "separable")}
    rows = {}
    for path in paths:
        standard_ms, separable_ms = medians[f"standard/{path.name}"], medians[f"separable/{path.name}"]
        execution = {"channels_last": path.channels_last, "bf16": path.bf16, "fused": path.fused}
        rows[path.name] = {
            "label": path.label,
            **execution,
            "compiled": path.compiled,
            "standard_ms": standard_ms,
            "separable_ms": separable_ms,
            "ratio": standard_ms / separable_ms,
            "default_for": [
                twin for twin, default in defaults.items() if default == execution and not path.compiled
            ],
        }
    fastest = {
        twin: min(rows, key=lambda name, twin=twin: rows[name][f"{twin}_ms"])
        for twin in ("standard", "separable")
    }
    return {
        "batch_size": settings.twin_batch,
        "paths": rows,
        "skipped": skipped,
        "default_execution": defaults,
        "fastest": {
            "standard_path": fastest["standard"],
            "standard_ms": rows[fastest["standard"]]["standard_ms"],
            "separable_path": fastest["separable"],
            "separable_ms": rows[fastest["separable"]]["separable_ms"],
            "ratio": rows[fastest["standard"]]["standard_ms"] / rows[fastest["separable"]]["separable_ms"],
        },
    }


def print_twins(result: dict[str, Any]) -> None:
    print(f"\n## Demo twins: one AdamW training step, batch {result['batch_size']}, 1x28x28 (median ms)\n")
    print("| execution | standard ms | separable ms | standard / separable |")
    print("|---|---:|---:|---:|")
    for row in result["paths"].values():
        mark = f" (sepconv default: {', '.join(row['default_for'])})" if row["default_for"] else ""
        print(
            f"| {row['label']}{mark} | {row['standard_ms']:.1f} | {row['separable_ms']:.1f} | {row['ratio']:.2f}x |"
        )
    for name, reason in result["skipped"].items():
        print(f"skipped {name}: {reason}")
    for twin, execution in result["default_execution"].items():
        if not any(twin in row["default_for"] for row in result["paths"].values()):
            print(f"sepconv's default for the {twin} twin ({execution}) was not timed in this run")
    fastest = result["fastest"]
    labels = {name: row["label"] for name, row in result["paths"].items()}
    print(
        f"\neach on its fastest path: standard {fastest['standard_ms']:.1f} ms ({labels[fastest['standard_path']]}), "
        f"separable {fastest['separable_ms']:.1f} ms ({labels[fastest['separable_path']]}), "
        f"ratio {fastest['ratio']:.2f}x"
    )


# 2. mobilenet_v2: sepconv's default training against the tutorial loop


def mobilenet_step(execution: Mapping[str, bool], settings: Settings) -> Callable[[], None]:
    """One SGD training step of ``mobilenet_v2`` (10 classes) on a fixed random batch, as a callable."""
    torch.manual_seed(0)
    model = create_model("mobilenet_v2", num_classes=10).train()
    set_fused(model, execution["fused"])
    generator = torch.Generator().manual_seed(1)
    size = settings.mobilenet_size
    images = torch.randn(settings.mobilenet_batch, 3, size, size, generator=generator)
    labels = torch.randint(0, 10, (settings.mobilenet_batch,), generator=generator)
    if execution["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=SGD_LR, momentum=SGD_MOMENTUM)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=execution["bf16"]):
            logits = model(images)
        F.cross_entropy(logits.float(), labels).backward()
        optimizer.step()

    return step


def benchmark_mobilenet(settings: Settings) -> dict[str, Any]:
    """Section 2: images/s of mobilenet_v2 training, sepconv's default execution vs the tutorial loop."""
    executions = {
        "sepconv_default": default_execution(create_model("mobilenet_v2", num_classes=10)),
        "tutorial": {"channels_last": False, "bf16": False, "fused": False},
    }
    medians = interleaved_medians_ms(
        {name: mobilenet_step(execution, settings) for name, execution in executions.items()}, settings
    )
    rows = {
        name: {
            **execution,
            "step_ms": medians[name],
            "images_per_s": 1000 * settings.mobilenet_batch / medians[name],
        }
        for name, execution in executions.items()
    }
    return {
        "batch_size": settings.mobilenet_batch,
        "input_size": [3, settings.mobilenet_size, settings.mobilenet_size],
        "optimizer": f"SGD lr {SGD_LR}, momentum {SGD_MOMENTUM}",
        "paths": rows,
        "ratio": rows["sepconv_default"]["images_per_s"] / rows["tutorial"]["images_per_s"],
    }


def describe_execution(execution: Mapping[str, bool]) -> str:
    return ", ".join(
        (
            "channels_last" if execution["channels_last"] else "NCHW",
            "bf16 autocast" if execution["bf16"] else "fp32",
            "fused" if execution["fused"] else "plain BatchNorm",
        )
    )


def print_mobilenet(result: dict[str, Any]) -> None:
    size = "x".join(str(value) for value in result["input_size"])
    print(f"\n## mobilenet_v2 training, {size}, batch {result['batch_size']}, {result['optimizer']}\n")
    print("| loop | execution | ms per step | images/s |")
    print("|---|---|---:|---:|")
    for name, row in result["paths"].items():
        print(f"| {name} | {describe_execution(row)} | {row['step_ms']:.1f} | {row['images_per_s']:.0f} |")
    print(f"\nsepconv default / tutorial loop: {result['ratio']:.2f}x images/s")


# 3. Isolated blocks


def conv_pair(channels: int) -> tuple[nn.Module, nn.Module]:
    """A standard 3x3 convolution C->C and depthwise 3x3 + pointwise 1x1, plain ``nn.Conv2d``, no bias."""
    standard = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
    separable = nn.Sequential(
        nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False),
        nn.Conv2d(channels, channels, 1, bias=False),
    )
    return standard, separable


def conv_norm_act_pair(channels: int) -> tuple[nn.Module, nn.Module]:
    """The same pair with BatchNorm + ReLU after each convolution, as sepconv's (fused) blocks."""
    from sepconv.layers import ConvNormAct, DepthwiseSeparableBlock

    return ConvNormAct(channels, channels, 3), DepthwiseSeparableBlock(channels, channels, 3)


def mac_ratio_formula(channels: int) -> float:
    """Standard / separable MACs per output pixel, by hand: 9C² / (9C + C²) = 9C / (9 + C)."""
    return 9 * channels**2 / (9 * channels + channels**2)


def mac_ratio(standard: nn.Module, separable: nn.Module, channels: int, size: int) -> float:
    """Standard / separable MACs of one image, counted by ``sepconv.analysis.summarize``."""
    from sepconv.analysis import summarize

    shape = (1, channels, size, size)
    return summarize(standard, shape).total_macs / summarize(separable, shape).total_macs


def block_calls(module: nn.Module, images: torch.Tensor) -> dict[str, Callable[[], object]]:
    """Forward (no gradients) and forward+backward (gradients of input and weights) of ``module``."""
    inputs = images.detach().requires_grad_()
    with torch.no_grad():
        grad_output = torch.randn_like(module(images))
    wrt = [inputs, *module.parameters()]

    def forward() -> object:
        with torch.no_grad():
            return module(images)

    def forward_backward() -> object:
        return torch.autograd.grad(module(inputs), wrt, grad_output)

    return {"forward": forward, "forward_backward": forward_backward}


def benchmark_blocks(settings: Settings) -> dict[str, Any]:
    """Section 3: realized speedup of separable over standard blocks, divided by their MAC ratio."""
    kinds = {"conv": conv_pair, "conv_norm_act": conv_norm_act_pair}
    calls: dict[str, Callable[[], object]] = {}
    mac_ratios: dict[tuple[str, int], float] = {}
    for channels, size in settings.block_shapes:
        generator = torch.Generator().manual_seed(channels)
        images = torch.randn(settings.block_batch, channels, size, size, generator=generator)
        images = images.contiguous(memory_format=torch.channels_last)
        for kind, make_pair in kinds.items():
            torch.manual_seed(0)
            pair = [module.train().to(memory_format=torch.channels_last) for module in make_pair(channels)]
            mac_ratios[kind, channels] = mac_ratio(*pair, channels, size)
            for twin, module in zip(("standard", "separable"), pair):
                for mode, call in block_calls(module, images).items():
                    calls[f"{kind}/{channels}/{twin}/{mode}"] = call
    medians = interleaved_medians_ms(calls, settings)

    results = []
    for channels, size in settings.block_shapes:
        entry: dict[str, Any] = {
            "channels": channels,
            "size": size,
            "mac_ratio_formula": mac_ratio_formula(channels),
        }
        for kind in kinds:
            macs = mac_ratios[kind, channels]
            figures: dict[str, Any] = {"mac_ratio": macs}
            for mode in ("forward", "forward_backward"):
                standard_ms = medians[f"{kind}/{channels}/standard/{mode}"]
                separable_ms = medians[f"{kind}/{channels}/separable/{mode}"]
                speedup = standard_ms / separable_ms
                figures[mode] = {
                    "standard_ms": standard_ms,
                    "separable_ms": separable_ms,
                    "speedup": speedup,
                    "realized_over_mac": speedup / macs,
                }
            entry[kind] = figures
        results.append(entry)
    return {"batch_size": settings.block_batch, "shapes": results}


def print_blocks(result: dict[str, Any]) -> None:
    titles = {
        "conv": "standard 3x3 conv vs depthwise 3x3 + pointwise 1x1 (plain nn.Conv2d, no BatchNorm)",
        "conv_norm_act": "the same with BatchNorm + ReLU after each conv (ConvNormAct / DepthwiseSeparableBlock, fused)",
    }
    for kind, title in titles.items():
        print(f"\n## Isolated blocks, batch {result['batch_size']}, channels_last fp32: {title}\n")
        print(
            "| C @ HxW | MAC ratio | fwd std ms | fwd sep ms | fwd realized/MAC "
            "| fwd+bwd std ms | fwd+bwd sep ms | fwd+bwd realized/MAC |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for entry in result["shapes"]:
            figures = entry[kind]
            forward, both = figures["forward"], figures["forward_backward"]
            print(
                f"| {entry['channels']} @ {entry['size']}x{entry['size']} | {figures['mac_ratio']:.2f}x "
                f"| {forward['standard_ms']:.2f} | {forward['separable_ms']:.2f} | {forward['realized_over_mac']:.2f} "
                f"| {both['standard_ms']:.2f} | {both['separable_ms']:.2f} | {both['realized_over_mac']:.2f} |"
            )
    for entry in result["shapes"]:
        if abs(entry["conv"]["mac_ratio"] - entry["mac_ratio_formula"]) > 1e-9 * entry["mac_ratio_formula"]:
            print(
                f"warning: summarize's MAC ratio {entry['conv']['mac_ratio']:.6f} differs from 9C/(9+C) = "
                f"{entry['mac_ratio_formula']:.6f} at C={entry['channels']}"
            )


# 4. Depthwise backward against its memory roofline


def depthwise_backward_bytes(batch: int, channels: int, size: int) -> int:
    """Bytes the depthwise backward must move at least: read grad_output and input, write grad_input."""
    return 3 * batch * channels * size * size * BYTES_PER_FLOAT32


def benchmark_depthwise_backward(settings: Settings) -> dict[str, Any]:
    """Section 4: the depthwise 3x3 backward (input and weight gradients) against the copy bandwidth."""
    from sepconv.layers import DepthwiseConv2d

    channels, size = settings.depthwise_shape
    batch = settings.depthwise_batch
    torch.manual_seed(0)
    layer = DepthwiseConv2d(channels, 3, padding=1, bias=False).to(memory_format=torch.channels_last)
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(batch, channels, size, size, generator=generator)
    images = images.contiguous(memory_format=torch.channels_last).requires_grad_()
    outputs = layer(images)
    grad_output = torch.randn_like(outputs)  # randn_like keeps the channels_last layout
    copy_elements = settings.copy_megabytes * 2**20 // BYTES_PER_FLOAT32
    source = torch.ones(copy_elements)  # written once, so its pages exist before timing
    destination = torch.zeros(copy_elements)

    def forward() -> object:
        with torch.no_grad():
            return layer(images)

    def backward() -> object:
        # The graph of one forward, kept, so that only the backward is timed.
        return torch.autograd.grad(outputs, (images, layer.weight), grad_output, retain_graph=True)

    medians = interleaved_medians_ms(
        {"forward": forward, "backward": backward, "copy": lambda: destination.copy_(source)}, settings
    )
    copy_bytes = 2 * copy_elements * BYTES_PER_FLOAT32  # read the source, write the destination
    bandwidth_gb_s = copy_bytes / (medians["copy"] / 1000) / 1e9
    moved_bytes = depthwise_backward_bytes(batch, channels, size)
    roofline_ms = moved_bytes / (bandwidth_gb_s * 1e9) * 1000
    return {
        "channels": channels,
        "size": size,
        "batch_size": batch,
        "forward_ms": medians["forward"],
        "backward_ms": medians["backward"],
        "backward_bytes": moved_bytes,
        "copy_bytes": copy_bytes,
        "copy_ms": medians["copy"],
        "bandwidth_gb_s": bandwidth_gb_s,
        "roofline_ms": roofline_ms,
        "fraction_of_roofline": roofline_ms / medians["backward"],
    }


def print_depthwise_backward(result: dict[str, Any]) -> None:
    shape = f"{result['channels']}@{result['size']}x{result['size']}, batch {result['batch_size']}"
    print(f"\n## Depthwise 3x3 backward, {shape}, channels_last fp32\n")
    print(
        f"copy bandwidth {result['bandwidth_gb_s']:.1f} GB/s ({result['copy_bytes'] / 1e6:.0f} MB moved in "
        f"{result['copy_ms']:.1f} ms)\n"
        f"backward (grad input + weight) {result['backward_ms']:.3f} ms; memory bound "
        f"{result['backward_bytes'] / 1e6:.1f} MB -> {result['roofline_ms']:.3f} ms; "
        f"achieved {result['fraction_of_roofline']:.2f} of the roofline\n"
        f"forward {result['forward_ms']:.3f} ms (backward / forward {result['backward_ms'] / result['forward_ms']:.2f}x)"
    )


# The run


def machine() -> dict[str, Any]:
    """What the figures depend on: CPU and its ISA, threads, torch, native bf16, the kernels, the load."""
    return {
        "cpu": cpu_summary(),
        "isa": cpu_features().to_dict(),
        "logical_cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "native_bf16": cpu_has_native_bf16(),
        "fused_kernels": kernels_available(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


SECTIONS: tuple[tuple[str, Callable[[Settings], dict[str, Any]], Callable[[dict[str, Any]], None]], ...] = (
    ("twins", benchmark_twins, print_twins),
    ("mobilenet_v2", benchmark_mobilenet, print_mobilenet),
    ("blocks", benchmark_blocks, print_blocks),
    ("depthwise_backward", benchmark_depthwise_backward, print_depthwise_backward),
)


def run(settings: Settings, *, show: bool = True) -> dict[str, Any]:
    """Every section in turn; returns all figures (what ``--json`` writes), printing them if ``show``."""
    started = time.perf_counter()
    report: dict[str, Any] = {"machine": machine(), "settings": asdict(settings)}
    if show:
        info = report["machine"]
        heap = (
            "kept between steps, as sepconv.train.fit runs (every path, baselines too)"
            if settings.heap == "kept"
            else "released (glibc's start-up thresholds)"
        )
        print(
            f"{info['cpu']}, {info['threads']} threads ({info['logical_cpus']} logical CPUs), torch {info['torch']}, "
            f"native bf16: {info['native_bf16']}, fused kernels: {info['fused_kernels']}, "
            f"load average {info['load_average']}\nfreed memory: {heap}"
        )
    with kept_heap() if settings.heap == "kept" else contextlib.nullcontext():
        for name, benchmark, show_section in SECTIONS:
            report[name] = benchmark(settings)
            if show:
                show_section(report[name])
                sys.stdout.flush()
    report["seconds"] = time.perf_counter() - started
    if show:
        print(f"\n(all sections: {report['seconds']:.0f} s)")
    return report


def settings_from_arguments(argv: Sequence[str] | None) -> tuple[Settings, str | None]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, help=f"interleaved rounds (default {Settings.rounds})")
    parser.add_argument(
        "--calls-per-round",
        type=int,
        help=f"timed calls per path per round (default {Settings.calls_per_round})",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 2 rounds of 1 call, no torch.compile"
    )
    parser.add_argument("--skip-compile", action="store_true", help="leave out the torch.compile path")
    parser.add_argument(
        "--bf16",
        choices=("auto", "on", "off"),
        default="auto",
        help="time bf16 autocast (auto: native bf16 only)",
    )
    parser.add_argument(
        "--heap",
        choices=("kept", "released"),
        default="kept",
        help="keep freed memory in the process between steps as sepconv's trainer does (default), "
        "or leave glibc's start-up behaviour",
    )
    parser.add_argument("--json", metavar="FILE", help="also write every figure to FILE")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else Settings()
    for name in ("rounds", "calls_per_round"):
        value = getattr(args, name)
        if value is not None:
            if value < 1:
                parser.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
            settings = replace(settings, **{name: value})
    settings = replace(
        settings, bf16=args.bf16, heap=args.heap, compile=settings.compile and not args.skip_compile
    )
    return settings, args.json


def main(argv: Sequence[str] | None = None) -> int:
    settings, json_path = settings_from_arguments(argv)
    report = run(settings)
    if json_path:
        Path(json_path).write_text(json.dumps(report, indent=2) + "\n")
        print(f"figures written to {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
