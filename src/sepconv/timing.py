"""The one interleaved timer: how long each of several callables takes, measured in shared rounds.

:func:`time_interleaved` answers "which of these is faster, here and now?" for any callables: execution
paths of one model (``sepconv bench``), two models (``sepconv compare``), the demo's twins, the
benchmarks. Timing them one after the other lets a change in the machine's load (another process, a
frequency step) favour whichever ran in a quiet moment; so every callable is first warmed up, then all
are timed in *rounds*, each round running one block of calls of every callable. A change in load then
hits all of them alike, and the medians over rounds are what to compare.

- A *block* repeats a call until it lasts ``min_block_seconds`` (or exactly ``calls_per_block`` times),
  so that a sub-millisecond call is not timed at the clock's resolution; one sample per round is the
  block's mean seconds per call.
- Before each block the timer pauses ``settle_seconds``, untimed (:data:`SETTLE_SECONDS`): the previous
  block's idle OpenMP or ONNX Runtime threads stop spinning before the next one is timed.
- Rounds repeat until ``min_run_seconds`` have been spent, at least ``min_rounds`` times.
- The result per callable, a :class:`Timing`, holds the samples, their median, extremes and spread
  (the interquartile range, :func:`latency_spread_ms`); :func:`within_noise` says whether two medians
  differ by more than their spreads, i.e. whether a speedup is one the measurement can vouch for.

Why not ``torch.utils.benchmark``: its ``blocked_autorange`` times one statement at a time and cannot
interleave several. This module imports no torch (it times any callable; a GPU caller passes
``synchronize=torch.cuda.synchronize``), and its clock and sleep can be replaced, so its behaviour is
tested against a fake clock.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from sepconv.checks import check_float, check_int

__all__ = [
    "SETTLE_SECONDS",
    "Progress",
    "Timing",
    "TimingPlan",
    "latency_spread_ms",
    "time_interleaved",
    "within_noise",
]

Key = TypeVar("Key", bound=Hashable)

# The default pause before each timed block, untimed: after a parallel region, OpenMP's worker threads
# spin for a while waiting for more work, and on a 2-core machine they slowed the next path's block
# (separable_cnn, batch 1: ONNX Runtime right after torch 0.46-0.86 ms, alone 0.23-0.25 ms, after a
# 20 ms pause 0.28-0.32 ms; a 5 ms pause was not enough).
#: The pause before each timed block, so one engine's threads do not slow the next one's start.
SETTLE_SECONDS = 0.02
# A call measured as taking no time at all (a coarse clock) still counts this long when sizing blocks.
_SHORTEST_CALL_SECONDS = 1e-9


@dataclass(frozen=True)
class TimingPlan:
    """How :func:`time_interleaved` times: warm-up, block length, pause, number of rounds.

    ``calls_per_block=None`` sizes each callable's block from one timed call so that it lasts
    ``min_block_seconds``; a number fixes it for every callable. ``rotate=True`` starts each round one
    callable later (A B C, B C A, C A B, ...), so that no callable always follows the same neighbour.
    ``min_run_seconds=0`` gives exactly ``min_rounds`` rounds.
    """

    warmup_calls: int = 3
    min_rounds: int = 5
    min_run_seconds: float = 3.0
    min_block_seconds: float = 0.02
    calls_per_block: int | None = None
    settle_seconds: float = SETTLE_SECONDS
    rotate: bool = False

    def __post_init__(self) -> None:
        check_int("warmup_calls", self.warmup_calls, minimum=0)
        check_int("min_rounds", self.min_rounds, minimum=1)
        if self.calls_per_block is not None:
            check_int("calls_per_block", self.calls_per_block, minimum=1)
        for name in ("min_run_seconds", "min_block_seconds", "settle_seconds"):
            check_float(name, getattr(self, name), minimum=0)


@dataclass(frozen=True)
class Timing:
    """What one callable measured: seconds per call, one sample per round (the mean of one block).

    >>> timing = Timing(seconds=(0.004, 0.001, 0.002, 0.003, 0.005), calls_per_block=10)
    >>> timing.median_ms, timing.min_ms, timing.max_ms, timing.spread_ms
    (3.0, 1.0, 5.0, 2.0)
    """

    seconds: tuple[float, ...]
    calls_per_block: int

    @property
    def samples_ms(self) -> list[float]:
        """The per-round samples in milliseconds, in the order of the rounds."""
        return [1000.0 * value for value in self.seconds]

    @property
    def median_ms(self) -> float:
        """The median over rounds, the figure to report and compare."""
        return statistics.median(self.samples_ms)

    @property
    def min_ms(self) -> float:
        """The fastest sample, in milliseconds."""
        return min(self.samples_ms)

    @property
    def max_ms(self) -> float:
        """The slowest sample, in milliseconds."""
        return max(self.samples_ms)

    @property
    def spread_ms(self) -> float | None:
        """The interquartile range over rounds (:func:`latency_spread_ms`); None below 2 rounds."""
        return latency_spread_ms(self.samples_ms)


class Progress:
    """Finished steps of a longer job toward its total, reported as ``callback(description, done, total)``.

    A job that times several phases counts ``plan.min_rounds`` steps for each before it starts;
    :func:`time_interleaved` then corrects the total once it knows how many rounds it will run, and
    advances one step per round. Without a callback nothing is reported.
    """

    def __init__(self, callback: Callable[[str, int, int], None] | None = None, total: int = 0) -> None:
        self.callback = callback
        self.completed = 0
        self.total = total

    def advance(self, description: str, *, steps: int = 1) -> None:
        """Count ``steps`` more finished steps and report ``description`` with the new count."""
        self.completed += steps
        self.report(description)

    def extend(self, steps: int) -> None:
        """Add ``steps`` to the total (fewer when negative), once the work turns out larger or smaller."""
        self.total += steps

    def report(self, description: str) -> None:
        """Call the callback with ``description`` and the counts so far (nothing without a callback)."""
        if self.callback is not None:
            self.callback(description, self.completed, self.total)


def time_interleaved(
    calls: Mapping[Key, Callable[[], object]],
    plan: TimingPlan = TimingPlan(),
    *,
    progress: Progress | None = None,
    label: str = "timing",
    synchronize: Callable[[], object] | None = None,
    clock: Callable[[], float] = time.perf_counter,
    sleep: Callable[[float], object] = time.sleep,
    settle_after: Mapping[Key, float] | None = None,
) -> dict[Key, Timing]:
    """Time every callable of ``calls`` in interleaved rounds (see the module's docstring); one
    :class:`Timing` per key, in the order of ``calls``.

    Each callable is first called ``plan.warmup_calls`` times (untimed), then, when blocks are sized
    or the run has a minimum length, once more, timed alone, to size its block and estimate a round.
    ``progress`` counts ``plan.min_rounds`` steps for this call (see :class:`Progress`); its reports read
    ``"<label>: round 3/10"``. ``synchronize`` is called before the clock starts and before it stops
    (e.g. ``torch.cuda.synchronize``, whose kernels run asynchronously). ``clock`` and ``sleep`` are
    for tests: a fake clock makes the timer deterministic.

    >>> ticks = iter(range(100))
    >>> timings = time_interleaved(
    ...     {"a": lambda: None, "b": lambda: None},
    ...     TimingPlan(warmup_calls=0, min_rounds=2, min_run_seconds=0, calls_per_block=1, settle_seconds=0),
    ...     clock=lambda: float(next(ticks)),
    ... )
    >>> {key: timing.seconds for key, timing in timings.items()}
    {'a': (1.0, 1.0), 'b': (1.0, 1.0)}
    """
    progress = Progress() if progress is None else progress
    keys = list(calls)
    if not keys:
        progress.extend(-plan.min_rounds)
        progress.report(f"{label}: nothing to time")
        return {}

    def timed(call: Callable[[], object], repeats: int) -> float:
        """Seconds per call of ``repeats`` calls in a row."""
        if synchronize is not None:
            synchronize()
        start = clock()
        for _ in range(repeats):
            call()
        if synchronize is not None:
            synchronize()
        return (clock() - start) / repeats

    for key in keys:
        for _ in range(plan.warmup_calls):
            calls[key]()
    calls_per_block, rounds = _block_sizes_and_rounds(calls, plan, timed)
    progress.extend(rounds - plan.min_rounds)
    samples: dict[Key, list[float]] = {key: [] for key in keys}
    extra = dict(settle_after or {})
    previous: Key | None = None
    for round_index in range(rounds):
        shift = round_index % len(keys) if plan.rotate else 0
        for key in keys[shift:] + keys[:shift]:
            pause = plan.settle_seconds + (extra.get(previous, 0.0) if previous is not None else 0.0)
            if pause:
                sleep(pause)
            samples[key].append(timed(calls[key], calls_per_block[key]))
            previous = key
        progress.advance(f"{label}: round {round_index + 1}/{rounds}")
    return {key: Timing(tuple(samples[key]), calls_per_block[key]) for key in keys}


def _block_sizes_and_rounds(
    calls: Mapping[Key, Callable[[], object]],
    plan: TimingPlan,
    timed: Callable[[Callable[[], object], int], float],
) -> tuple[dict[Key, int], int]:
    """Calls per block of each callable, and the number of rounds the plan asks for."""
    if plan.calls_per_block is not None and plan.min_run_seconds == 0:
        return dict.fromkeys(calls, plan.calls_per_block), plan.min_rounds  # nothing to estimate
    calls_per_block: dict[Key, int] = {}
    round_seconds = 0.0
    for key, call in calls.items():
        seconds = max(timed(call, 1), _SHORTEST_CALL_SECONDS)
        if plan.calls_per_block is None:
            calls_per_block[key] = max(1, math.ceil(plan.min_block_seconds / seconds))
        else:
            calls_per_block[key] = plan.calls_per_block
        round_seconds += calls_per_block[key] * seconds
    rounds = max(
        plan.min_rounds, math.ceil(plan.min_run_seconds / max(round_seconds, _SHORTEST_CALL_SECONDS))
    )
    return calls_per_block, rounds


def latency_spread_ms(samples_ms: Sequence[float]) -> float | None:
    """The interquartile range of per-round latencies (robust to one slow round); None below 2 rounds.

    >>> latency_spread_ms([1.0, 2.0, 3.0, 4.0, 5.0])
    2.0
    """
    if len(samples_ms) < 2:
        return None
    lower, _, upper = statistics.quantiles(samples_ms, n=4, method="inclusive")
    return upper - lower


def within_noise(
    median_a: float, spread_a: float | None, median_b: float, spread_b: float | None
) -> bool | None:
    """Whether two medians differ by no more than the larger of their spreads: then A / B is no speedup.

    None when a spread is unknown (a single round). The larger spread, not the sum: a difference inside
    either side's own round-to-round variation is not one the measurement can vouch for.

    >>> within_noise(10.0, 1.5, 11.0, 0.5), within_noise(10.0, 0.4, 11.0, 0.5)
    (True, False)
    """
    if spread_a is None or spread_b is None:
        return None
    return abs(median_a - median_b) <= max(spread_a, spread_b)
