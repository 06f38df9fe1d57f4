"""Start-up time of the ``sepconv`` command next to ``import torch``, each in fresh processes.

``sepconv --help`` and ``sepconv calc`` (integer arithmetic) should answer at once: they import no torch.
Each command runs ``--runs`` times (default 10) in a fresh interpreter, interleaved so that a change of
load on a shared machine hits every command alike; the table gives the median wall time, the fastest,
and each median as a fraction of ``python -c "import torch"`` measured in the same run. The bare
interpreter (``python -c pass``) is the floor no command can go below.

    python benchmarks/cli_startup.py [--runs 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "sepconv --help": [sys.executable, "-m", "sepconv", "--help"],
    "sepconv calc": [sys.executable, "-m", "sepconv", "calc"],
    "sepconv calc --json": [sys.executable, "-m", "sepconv", "calc", "--json"],
    'python -c "import torch"': [sys.executable, "-c", "import torch"],
}
REFERENCE = 'python -c "import torch"'


def _seconds(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def measure(runs: int) -> dict[str, list[float]]:
    """Wall times of ``runs`` fresh processes of each command, run in interleaved rounds."""
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for command in COMMANDS.values():  # one untimed run each: the file cache is warm for all alike
        _seconds(command)
    for _ in range(runs):
        for name, command in COMMANDS.items():
            times[name].append(_seconds(command))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="fresh processes per command (default 10)")
    runs = parser.parse_args().runs
    times = measure(runs)
    reference = statistics.median(times[REFERENCE])
    width = max(map(len, COMMANDS))
    print(f"{runs} fresh processes each, interleaved; load average {os.getloadavg()[0]:.1f}")
    print(f"{'command':<{width}}  {'median':>8}  {'fastest':>8}  {'/ import torch':>14}")
    for name, samples in times.items():
        median = statistics.median(samples)
        print(f"{name:<{width}}  {median:>7.3f}s  {min(samples):>7.3f}s  {median / reference:>13.2f}x")


if __name__ == "__main__":
    main()
