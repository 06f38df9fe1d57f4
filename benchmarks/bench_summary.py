"""How long ``sepconv summary`` takes, next to what it is made of: a plain forward pass and FlopCounterMode.

Run: python benchmarks/bench_summary.py [MODEL ...]   (default torchvision:resnet50, 1x3x224x224)

Prints, per model, the best of 3 interleaved runs (``sepconv.timing``) of: a plain forward pass (no_grad, eval), a forward pass under
torch.utils.flop_counter.FlopCounterMode, summarize() (one instrumented pass with MACs and receptive
fields), and the whole command in a fresh process (imports, model construction, table) next to `sepconv --help` (start-up alone), with the
ratios summarize / forward and summarize / FlopCounterMode.
"""

from __future__ import annotations

import subprocess
import sys

import torch
from torch.utils.flop_counter import FlopCounterMode

from sepconv.analysis import summarize
from sepconv.models import create_model
from sepconv.timing import TimingPlan, time_interleaved

SHAPE = (1, 3, 224, 224)


# Best of 3 interleaved rounds, one call each; the in-process calls after one warm-up call.
IN_PROCESS = TimingPlan(warmup_calls=1, min_rounds=3, min_run_seconds=0.0, calls_per_block=1)
# A fresh process each: one run of each command, nothing to warm up.
FRESH_PROCESS = TimingPlan(warmup_calls=0, min_rounds=1, min_run_seconds=0.0, calls_per_block=1)


def run_command(command: list[str]) -> None:
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def bench(name: str) -> None:
    model = create_model(name).eval()
    image = torch.randn(SHAPE)

    def forward() -> None:
        with torch.no_grad():
            model(image)

    def counted() -> None:
        with torch.no_grad(), FlopCounterMode(display=False):
            model(image)

    calls = {"forward": forward, "counted": counted, "summary": lambda: summarize(model, SHAPE)}
    best_s = {key: timing.min_ms / 1000 for key, timing in time_interleaved(calls, IN_PROCESS).items()}
    forward_s, counter_s, summary_s = best_s["forward"], best_s["counted"], best_s["summary"]
    commands = {
        "summary": lambda: run_command([sys.executable, "-m", "sepconv.cli.main", "summary", name]),
        "help": lambda: run_command([sys.executable, "-m", "sepconv.cli.main", "--help"]),
    }
    run_s = {key: timing.min_ms / 1000 for key, timing in time_interleaved(commands, FRESH_PROCESS).items()}
    command_s, startup_s = run_s["summary"], run_s["help"]
    print(
        f"{name}: forward {forward_s * 1e3:.0f} ms | FlopCounterMode {counter_s * 1e3:.0f} ms | "
        f"summarize {summary_s * 1e3:.0f} ms ({summary_s / forward_s:.2f}x forward, "
        f"{summary_s / counter_s:.2f}x FlopCounterMode) | `sepconv summary {name}` {command_s:.2f} s, "
        f"of which `sepconv --help` (imports, parser) {startup_s:.2f} s (threads: {torch.get_num_threads()})"
    )


if __name__ == "__main__":
    for model_name in sys.argv[1:] or ["torchvision:resnet50"]:
        bench(model_name)
