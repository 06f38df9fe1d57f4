"""The figures behind sepconv's fixed memory-format / precision rule (``sepconv.train.precision``).

Times one training step (AdamW, batch 64, 1x28x28, cross-entropy) of the demo twins in four
executions — NCHW and channels_last, float32 and bf16 autocast — in one process, interleaved
(``sepconv.timing``), and prints each median with its ratio to NCHW float32. The rule picks channels_last for every convolutional model and
bf16 only where the CPU has native bf16 units; this shows what that costs or gains on this machine.

Run: python benchmarks/bench_precision_rule.py [--steps N]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from torch import nn

from sepconv.machine import cpu_has_native_bf16
from sepconv.models import create_model
from sepconv.timing import TimingPlan, time_interleaved
from sepconv.train.precision import choose_precision

EXECUTIONS = ((False, False), (True, False), (False, True), (True, True))  # (channels_last, bf16)


def training_step(model_name: str, channels_last: bool, bf16: bool) -> Callable[[], None]:
    """One AdamW training step of ``model_name`` on a fixed random batch of 64, as a callable."""
    torch.manual_seed(0)
    model = create_model(model_name)
    images = torch.randn(64, 1, 28, 28)
    labels = torch.randint(0, 10, (64,))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters())

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(images)
        loss = nn.functional.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, native bf16: {cpu_has_native_bf16()}"
    )
    # The first steps pay for kernel selection and allocation: three untimed steps each.
    plan = TimingPlan(warmup_calls=3, min_rounds=args.steps, min_run_seconds=0.0, calls_per_block=1)
    for name in ("standard_cnn", "separable_cnn"):
        rule = choose_precision(create_model(name), on_gpu=False, channels_last="auto", bf16="auto")
        steps = {execution: training_step(name, *execution) for execution in EXECUTIONS}
        medians = {execution: timing.median_ms for execution, timing in time_interleaved(steps, plan).items()}
        baseline = medians[False, False]
        print(f"{name}: the rule picks channels_last={rule.channels_last}, bf16={rule.bf16}")
        for (channels_last, bf16), ms in medians.items():
            label = f"{'channels_last' if channels_last else 'NCHW'} {'bf16' if bf16 else 'float32'}"
            print(f"  {label:22s} {ms:7.1f} ms  {baseline / ms:.2f}x")


if __name__ == "__main__":
    main()
