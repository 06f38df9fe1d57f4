"""The figures behind sepconv's fixed memory-format / precision rule (``sepconv.train.precision``).

Times one training step (AdamW, batch 64, 1x28x28, cross-entropy) of the demo twins in four
executions — NCHW and channels_last, float32 and bf16 autocast — in one process, and prints each
median with its ratio to NCHW float32. The rule picks channels_last for every convolutional model and
bf16 only where the CPU has native bf16 units; this shows what that costs or gains on this machine.

Run: python benchmarks/bench_precision_rule.py [--steps N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from sepconv.machine import cpu_has_native_bf16
from sepconv.models import create_model
from sepconv.train.precision import choose_precision


def step_ms(model_name: str, channels_last: bool, bf16: bool, steps: int) -> float:
    torch.manual_seed(0)
    model = create_model(model_name)
    images = torch.randn(64, 1, 28, 28)
    labels = torch.randint(0, 10, (64,))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters())
    times = []
    for _ in range(steps + 3):  # the first steps pay for kernel selection and allocation
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(images)
        loss = nn.functional.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times[3:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, native bf16: {cpu_has_native_bf16()}"
    )
    for name in ("standard_cnn", "separable_cnn"):
        rule = choose_precision(create_model(name), on_gpu=False, channels_last="auto", bf16="auto")
        baseline = step_ms(name, channels_last=False, bf16=False, steps=args.steps)
        print(f"{name}: the rule picks channels_last={rule.channels_last}, bf16={rule.bf16}")
        print(f"  NCHW float32           {baseline:7.1f} ms  1.00x")
        for channels_last, bf16 in ((True, False), (False, True), (True, True)):
            label = f"{'channels_last' if channels_last else 'NCHW'} {'bf16' if bf16 else 'float32'}"
            ms = step_ms(name, channels_last=channels_last, bf16=bf16, steps=args.steps)
            print(f"  {label:22s} {ms:7.1f} ms  {baseline / ms:.2f}x")


if __name__ == "__main__":
    main()
