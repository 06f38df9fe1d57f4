"""How long ``sepconv summary`` takes, next to what it is made of: a plain forward pass and FlopCounterMode.

Run: python benchmarks/bench_summary.py [MODEL ...]   (default torchvision:resnet50, 1x3x224x224)

Prints, per model, the best of 3 runs of: a plain forward pass (no_grad, eval), a forward pass under
torch.utils.flop_counter.FlopCounterMode, summarize() (one instrumented pass with MACs and receptive
fields), and the whole command in a fresh process (imports, model construction, table) next to `sepconv --help` (start-up alone), with the
ratios summarize / forward and summarize / FlopCounterMode.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from sepconv.analysis import summarize
from sepconv.models import create_model

SHAPE = (1, 3, 224, 224)


def best_of(repeats: int, work: Callable[[], object]) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def run_seconds(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def bench(name: str) -> None:
    model = create_model(name).eval()
    image = torch.randn(SHAPE)

    def forward() -> None:
        with torch.no_grad():
            model(image)

    def counted() -> None:
        with torch.no_grad(), FlopCounterMode(display=False):
            model(image)

    forward()  # warm-up: first-call allocations and kernel selection
    forward_s = best_of(3, forward)
    counter_s = best_of(3, counted)
    summary_s = best_of(3, lambda: summarize(model, SHAPE))
    command_s = run_seconds([sys.executable, "-m", "sepconv.cli.main", "summary", name])
    startup_s = run_seconds([sys.executable, "-m", "sepconv.cli.main", "--help"])
    print(
        f"{name}: forward {forward_s * 1e3:.0f} ms | FlopCounterMode {counter_s * 1e3:.0f} ms | "
        f"summarize {summary_s * 1e3:.0f} ms ({summary_s / forward_s:.2f}x forward, "
        f"{summary_s / counter_s:.2f}x FlopCounterMode) | `sepconv summary {name}` {command_s:.2f} s, "
        f"of which `sepconv --help` (imports, parser) {startup_s:.2f} s (threads: {torch.get_num_threads()})"
    )


if __name__ == "__main__":
    for model_name in sys.argv[1:] or ["torchvision:resnet50"]:
        bench(model_name)
