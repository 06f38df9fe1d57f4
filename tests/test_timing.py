"""sepconv.timing against a fake clock: what is called when, how blocks and rounds are sized, what the
figures are. The fake machine's calls take known times, so every figure has an exact expected value and
nothing real is timed."""

from __future__ import annotations

import math

import pytest

from sepconv import timing
from sepconv.errors import ArgumentTypeError, ParameterError
from sepconv.timing import Progress, Timing, TimingPlan, latency_spread_ms, time_interleaved, within_noise


class FakeMachine:
    """A clock that moves only when a fake call runs, the timer sleeps, or a device is synchronized.

    ``call(name, seconds)`` returns a callable that takes ``seconds`` (a number, or one per call in
    turn); with ``asynchronous=True`` it only queues its work, as a GPU kernel launch does, and the
    clock catches up when :meth:`synchronize` runs. Every event goes to ``log``.
    """

    def __init__(self) -> None:
        self.now = 0.0
        self.pending = 0.0
        self.log: list[str] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.log.append(f"sleep {seconds}")
        self.now += seconds

    def synchronize(self) -> None:
        self.log.append("sync")
        self.now += self.pending
        self.pending = 0.0

    def call(self, name: str, seconds: float | list[float], *, asynchronous: bool = False):
        durations = iter(seconds) if isinstance(seconds, list) else None

        def run() -> None:
            self.log.append(name)
            duration = next(durations) if durations is not None else seconds
            if asynchronous:
                self.pending += duration
            else:
                self.now += duration

        return run

    def time(self, calls, plan, **options):
        return time_interleaved(calls, plan, clock=self.clock, sleep=self.sleep, **options)


def calls_only(log: list[str]) -> list[str]:
    return [event for event in log if not event.startswith(("sleep", "sync"))]


def test_blocks_last_min_block_seconds_and_rounds_fill_min_run_seconds():
    # Durations in powers of two, so that the fake clock's sums are exact in floating point.
    machine = FakeMachine()
    calls = {"a": machine.call("a", 2**-10), "b": machine.call("b", 2**-8)}
    plan = TimingPlan(
        warmup_calls=2, min_rounds=5, min_run_seconds=0.5, min_block_seconds=2**-5, settle_seconds=0
    )
    timings = machine.time(calls, plan)
    # Blocks of 1/32 s: 32 calls of a, 8 of b; a round is 2 x 1/32 s = 1/16 s of calls, so 0.5 s
    # takes 8 rounds (more than min_rounds).
    assert {key: value.calls_per_block for key, value in timings.items()} == {"a": 32, "b": 8}
    assert timings["a"].seconds == (2**-10,) * 8 and timings["b"].seconds == (2**-8,) * 8
    assert (timings["a"].median_ms, timings["b"].median_ms) == (1000 / 1024, 1000 / 256)
    assert timings["a"].spread_ms == 0.0
    # Warm-up (2 each, one callable after the other), one sizing call each, then 8 rounds of blocks.
    assert calls_only(machine.log) == ["a", "a", "b", "b", "a", "b"] + (["a"] * 32 + ["b"] * 8) * 8


def test_a_pause_precedes_every_block_and_no_pause_is_timed():
    machine = FakeMachine()
    calls = {"a": machine.call("a", 0.001), "b": machine.call("b", 0.002)}
    plan = TimingPlan(
        warmup_calls=0, min_rounds=3, min_run_seconds=0.0, calls_per_block=4, settle_seconds=0.5
    )
    timings = machine.time(calls, plan)
    assert machine.log == (["sleep 0.5", "a", "a", "a", "a", "sleep 0.5", "b", "b", "b", "b"]) * 3
    # The half-second pauses would show as +125 ms per call if they were inside the timed block.
    assert timings["a"].seconds == pytest.approx((0.001,) * 3, rel=1e-9)
    assert timings["b"].seconds == pytest.approx((0.002,) * 3, rel=1e-9)


def test_a_spinning_callable_makes_the_next_pause_longer():
    machine = FakeMachine()
    calls = {"spins": machine.call("spins", 0.001), "b": machine.call("b", 0.002)}
    plan = TimingPlan(
        warmup_calls=0, min_rounds=2, min_run_seconds=0.0, calls_per_block=1, settle_seconds=0.5
    )
    timings = machine.time(calls, plan, settle_after={"spins": 0.25})
    # the first pause follows nothing; every pause after a block of "spins" waits 0.25 s more
    assert machine.log == ["sleep 0.5", "spins", "sleep 0.75", "b", "sleep 0.5", "spins", "sleep 0.75", "b"]
    assert timings["b"].seconds == pytest.approx((0.002,) * 2, rel=1e-9)


def test_min_rounds_wins_over_a_short_run_and_a_fixed_block_needs_no_sizing_call():
    machine = FakeMachine()
    plan = TimingPlan(warmup_calls=1, min_rounds=4, min_run_seconds=0.0, calls_per_block=2, settle_seconds=0)
    timings = machine.time({"a": machine.call("a", 0.01)}, plan)
    assert calls_only(machine.log) == ["a"] + ["a", "a"] * 4  # warm-up, then 4 blocks of 2
    assert timings["a"].calls_per_block == 2 and len(timings["a"].seconds) == 4


def test_a_fixed_block_still_sizes_the_run_when_it_has_a_minimum_length():
    machine = FakeMachine()
    plan = TimingPlan(warmup_calls=0, min_rounds=1, min_run_seconds=1.0, calls_per_block=10, settle_seconds=0)
    timings = machine.time({"a": machine.call("a", 0.01)}, plan)
    # One sizing call (10 ms); a round of 10 calls is 0.1 s, so 1 s takes 10 rounds.
    assert len(timings["a"].seconds) == 10
    assert calls_only(machine.log) == ["a"] * (1 + 10 * 10)


def test_rotated_rounds_start_one_callable_later_each_time():
    machine = FakeMachine()
    calls = {name: machine.call(name, 0.001) for name in "abc"}
    plan = TimingPlan(warmup_calls=1, min_rounds=4, min_run_seconds=0.0, calls_per_block=2, rotate=True)
    machine.time(calls, plan)
    rounds = [name for order in ("abc", "bca", "cab", "abc") for name in order for _ in range(2)]
    assert calls_only(machine.log) == ["a", "b", "c", *rounds]


def test_figures_are_the_median_extremes_and_interquartile_range_of_the_rounds():
    machine = FakeMachine()
    per_round_ms = [4.0, 1.0, 2.0, 5.0, 3.0]
    plan = TimingPlan(warmup_calls=0, min_rounds=5, min_run_seconds=0.0, calls_per_block=1, settle_seconds=0)
    result = machine.time({"a": machine.call("a", [ms / 1000 for ms in per_round_ms])}, plan)["a"]
    assert result.samples_ms == pytest.approx(per_round_ms, rel=1e-9)
    assert (result.median_ms, result.min_ms, result.max_ms) == pytest.approx((3.0, 1.0, 5.0), rel=1e-9)
    # Quartiles of 1..5 (inclusive method): 2 and 4.
    assert result.spread_ms == pytest.approx(2.0, rel=1e-9)
    assert Timing(seconds=(0.003,), calls_per_block=1).spread_ms is None  # one round measures no spread


def test_synchronize_makes_asynchronous_work_count():
    machine = FakeMachine()
    calls = {"kernel": machine.call("kernel", 0.003, asynchronous=True)}
    plan = TimingPlan(warmup_calls=1, min_rounds=3, min_run_seconds=0.0, calls_per_block=5, settle_seconds=0)
    timed = machine.time(calls, plan, synchronize=machine.synchronize)["kernel"]
    assert timed.seconds == pytest.approx((0.003,) * 3, rel=1e-9)
    # The warm-up is not synchronized; each block is, before the clock starts and before it stops.
    assert machine.log[1:] == (["sync"] + ["kernel"] * 5 + ["sync"]) * 3
    unsynchronized = FakeMachine()
    calls = {"kernel": unsynchronized.call("kernel", 0.003, asynchronous=True)}
    assert unsynchronized.time(calls, plan)["kernel"].seconds == (0.0, 0.0, 0.0)  # what the sync is for


def test_progress_counts_rounds_toward_a_total_corrected_once_planned():
    machine = FakeMachine()
    reports = []
    plan = TimingPlan(
        warmup_calls=0, min_rounds=2, min_run_seconds=0.05, min_block_seconds=0.01, settle_seconds=0
    )
    # The caller counted 1 step of its own and min_rounds for the timing; 10 ms blocks, 50 ms: 5 rounds.
    progress = Progress(lambda *report: reports.append(report), total=1 + plan.min_rounds)
    progress.advance("prepared")
    machine.time({"a": machine.call("a", 0.01)}, plan, progress=progress, label="timing inference")
    assert reports == [("prepared", 1, 3)] + [
        (f"timing inference: round {n}/5", 1 + n, 6) for n in range(1, 6)
    ]


def test_nothing_to_time_takes_its_rounds_off_the_total():
    reports = []
    progress = Progress(lambda *report: reports.append(report), total=5)
    assert time_interleaved({}, TimingPlan(min_rounds=5), progress=progress, label="timing training") == {}
    assert reports == [("timing training: nothing to time", 0, 0)]
    assert time_interleaved({}, TimingPlan()) == {}  # without a progress counter too


def test_a_call_faster_than_the_clock_gets_blocks_of_bounded_length():
    machine = FakeMachine()
    plan = TimingPlan(
        warmup_calls=0, min_rounds=2, min_run_seconds=0.0, min_block_seconds=1e-6, settle_seconds=0
    )
    # A call the clock sees as taking no time counts as 1 ns: 1 us blocks of 1000 calls.
    assert machine.time({"a": machine.call("a", 0.0)}, plan)["a"].calls_per_block == 1000


@pytest.mark.parametrize(
    ("field", "value", "error", "message"),
    [
        ("min_rounds", 0, ParameterError, "min_rounds must be a positive integer, got 0"),
        ("warmup_calls", -1, ParameterError, "warmup_calls must be a non-negative integer, got -1"),
        ("calls_per_block", 0, ParameterError, "calls_per_block must be a positive integer, got 0"),
        ("min_rounds", 2.5, ArgumentTypeError, "min_rounds must be a positive integer, got 2.5"),
        ("settle_seconds", -0.1, ParameterError, "settle_seconds must be a finite number >= 0, got -0.1"),
        (
            "min_run_seconds",
            math.nan,
            ParameterError,
            "min_run_seconds must be a finite number >= 0, got nan",
        ),
    ],
)
def test_a_bad_plan_is_refused_naming_its_field(field, value, error, message):
    with pytest.raises(error) as raised:
        TimingPlan(**{field: value})
    assert str(raised.value) == message
    assert raised.value.param == field


def test_spread_and_noise_are_the_timers_and_compare_reexports_them():
    from sepconv.deploy import compare

    assert compare.latency_spread_ms is latency_spread_ms and compare.within_noise is within_noise
    assert within_noise(10.0, 1.0, 11.0, 0.5) is True  # difference 1.0 <= the larger spread 1.0
    assert within_noise(10.0, 0.9, 11.0, 0.5) is False
    assert within_noise(10.0, None, 11.0, 0.5) is None
    assert timing.SETTLE_SECONDS == 0.02
