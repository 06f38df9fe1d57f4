"""Layer latency: sepconv's SeparableConv2d vs the hand-written nn.Conv2d pair and vs a standard conv.

Prints, per configuration, the median forward latency (CPU, batch 8, float32, no grad; the three
modules timed in interleaved rounds by ``sepconv.timing``) of
  - standard: nn.Conv2d(c_in, c_out, 3, padding=1)
  - by hand:  nn.Conv2d(c_in, c_in, 3, padding=1, groups=c_in) then nn.Conv2d(c_in, c_out, 1)
  - sepconv:  SeparableConv2d(c_in, c_out, 3, padding=1)
and the ratios sepconv / by-hand (the wrapper's overhead: should be ~1.0) and sepconv / standard
(what separability buys on this machine; compare with the MAC ratio printed beside it).

Run: python benchmarks/bench_layers.py [--threads N] [--repeats R]
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from sepconv import arithmetic
from sepconv.layers import SeparableConv2d
from sepconv.timing import TimingPlan, time_interleaved

CONFIGS = [(32, 64, 112), (64, 128, 56), (128, 256, 28), (256, 512, 14), (512, 512, 7)]


def medians_ms(modules: dict[str, nn.Module], x: torch.Tensor, repeats: int) -> dict[str, float]:
    """Median ms of one forward of each module, one call per module per round, ``repeats`` rounds."""
    plan = TimingPlan(warmup_calls=3, min_rounds=repeats, min_run_seconds=0.0, calls_per_block=1)
    calls = {name: (lambda module=module: module(x)) for name, module in modules.items()}
    with torch.no_grad():
        return {name: timing.median_ms for name, timing in time_interleaved(calls, plan).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {args.threads} threads, batch {args.batch_size}, median of {args.repeats}"
    )
    header = f"{'c_in->c_out @ HxW':>20} {'standard ms':>12} {'by hand ms':>11} {'sepconv ms':>11} {'sep/hand':>9} {'sep/std':>8} {'MACs sep/std':>13}"
    print(header)
    for in_channels, out_channels, size in CONFIGS:
        x = torch.randn(args.batch_size, in_channels, size, size)
        standard = nn.Conv2d(in_channels, out_channels, 3, padding=1).eval()
        by_hand = nn.Sequential(
            nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels, bias=False),
            nn.Conv2d(in_channels, out_channels, 1),
        ).eval()
        ours = SeparableConv2d(in_channels, out_channels, 3, padding=1).eval()
        medians = medians_ms({"standard": standard, "by_hand": by_hand, "ours": ours}, x, args.repeats)
        standard_ms, by_hand_ms, ours_ms = medians["standard"], medians["by_hand"], medians["ours"]
        mac_ratio = arithmetic.separable_cost_ratio(out_channels, 3)
        label = f"{in_channels}->{out_channels} @ {size}x{size}"
        print(
            f"{label:>20} {standard_ms:12.2f} {by_hand_ms:11.2f} {ours_ms:11.2f} "
            f"{ours_ms / by_hand_ms:9.2f} {ours_ms / standard_ms:8.2f} {mac_ratio:13.3f}"
        )


if __name__ == "__main__":
    main()
