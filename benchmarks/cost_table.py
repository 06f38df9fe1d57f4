"""How long the per-layer cost table of ``sepconv optimize`` takes to fill, empty and then cached.

For each model at its input size: the sites (:func:`sepconv.optimize.sites.find_sites`), then every
candidate of every site measured on the engine into a fresh table (:func:`~sepconv.optimize.costs.
measure_costs`), then the same call again on that table, which must measure nothing. Printed beside the
issue 22 targets for planning on 2 cores: at most 10 minutes with an empty table, at most 1 minute
cached (the cost table is the part of planning that times layers; the sensitivity table and the
end-to-end measurements come on top: ``benchmarks/optimize.py``). Also, per model, the share of the
original MACs and of the summed per-layer time that the fastest candidate of every site keeps: what a
plan ignoring accuracy could reach, by the table's own reckoning.

    python benchmarks/cost_table.py [--models standard_cnn,torchvision:resnet18,torchvision:vgg11]
        [--engine ort] [--batch-size 1] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from sepconv.deploy.engines import get_engine
from sepconv.models import create_model, default_input_size
from sepconv.optimize.costs import CostTable, measure_costs
from sepconv.optimize.sites import find_sites

# The models and sizes: its own demo model at its size, the torchvision ones at 3x64x64.
MODELS = "standard_cnn,torchvision:resnet18,torchvision:vgg11"
SIZES = {"torchvision:resnet18": (3, 64, 64), "torchvision:vgg11": (3, 64, 64)}
TARGET_EMPTY_S, TARGET_CACHED_S = 600.0, 60.0


def measure(name: str, engine_name: str, batch_size: int, threads: int, folder: Path) -> dict[str, float]:
    """Seconds to find the sites, fill an empty table and read it back; the fastest plan's shares."""
    model = create_model(name).eval()
    size = SIZES.get(name) or tuple(default_input_size(model))
    engine = get_engine(engine_name)
    started = time.perf_counter()
    sites, _ = find_sites(model, size)
    found = time.perf_counter()
    table = CostTable(folder / f"{name.replace(':', '-')}.json")
    options = {"batch_size": batch_size, "threads": threads, "table": table}
    costs = measure_costs(model, sites, engine, **options)
    filled = time.perf_counter()
    again = measure_costs(model, sites, engine, **options)
    cached = time.perf_counter()
    if not all(cost.cached for site in again.values() for cost in site.values()):
        raise RuntimeError(f"{name}: the second run measured again")
    reused = sum(cost.cached for site in costs.values() for cost in site.values())
    keep_ms = sum(site[None].ms for site in costs.values())
    fastest_ms = sum(min(cost.ms for cost in site.values()) for site in costs.values())
    keep_macs = sum(site[None].macs for site in costs.values())
    fastest_macs = sum(min(site.values(), key=lambda cost: cost.ms).macs for site in costs.values())
    return {
        "sites": len(sites),
        "candidates": sum(len(site) for site in costs.values()),
        "reused": reused,
        "sites_s": found - started,
        "empty_s": filled - found,
        "cached_s": cached - filled,
        "time_kept": fastest_ms / keep_ms,
        "macs_kept": fastest_macs / keep_macs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=MODELS, help=f"comma-separated (default {MODELS})")
    parser.add_argument("--engine", default="ort", help="ort, ort-int8 or torch (default ort)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print(
        f"engine {args.engine}, batch {args.batch_size}, {args.threads} threads; load average "
        f"{os.getloadavg()[0]:.1f}; targets: empty <= {TARGET_EMPTY_S:.0f} s, cached <= {TARGET_CACHED_S:.0f} s"
    )
    header = (
        f"{'model':<22} {'sites':>5} {'cands':>5} {'reused':>6} {'find s':>7} {'empty s':>8} "
        f"{'cached s':>8} {'fastest: time':>13} {'MACs':>6}"
    )
    print(header)
    with tempfile.TemporaryDirectory(prefix="sepconv-cost-table-") as folder:
        for name in args.models.split(","):
            row = measure(name, args.engine, args.batch_size, args.threads, Path(folder))
            print(
                f"{name:<22} {row['sites']:>5} {row['candidates']:>5} {row['reused']:>6} "
                f"{row['sites_s']:>7.1f} {row['empty_s']:>8.1f} {row['cached_s']:>8.2f} "
                f"{row['time_kept']:>12.2f}x {row['macs_kept']:>5.2f}x",
                flush=True,
            )


if __name__ == "__main__":
    main()
