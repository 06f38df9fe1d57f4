"""``compare`` says "within noise" instead of a speedup when the timings' spread exceeds the difference.

Decided from fixed, synthetic timings (never measured ones): the spread of a latency is the
interquartile range of its rounds, and A / B is reported as a speedup only when the medians differ
by more than the larger of the two spreads.
"""

from __future__ import annotations

import json

import pytest

from sepconv.deploy.compare import Comparison, ModelMeasurement, latency_spread_ms, within_noise

# Per-round forward latencies in ms, chosen so that the quartiles can be worked by hand
# (statistics.quantiles, inclusive method: position (n - 1) * q between the sorted values).
NOISY_A = [10.0, 10.5, 11.0, 14.0, 9.0]  # sorted 9, 10, 10.5, 11, 14: median 10.5, Q1 10, Q3 11 -> IQR 1
NOISY_B = [10.2, 10.4, 10.0, 10.1, 10.3]  # median 10.2, Q1 10.1, Q3 10.3 -> IQR 0.2
FAST_B = [5.0, 5.1, 5.2, 5.1, 5.0]  # sorted 5, 5, 5.1, 5.1, 5.2: median 5.1, Q1 5.0, Q3 5.1 -> IQR 0.1


def test_spread_is_the_interquartile_range_of_the_rounds():
    assert latency_spread_ms(NOISY_A) == pytest.approx(1.0, abs=1e-12)
    assert latency_spread_ms(NOISY_B) == pytest.approx(0.2, abs=1e-12)
    assert latency_spread_ms(FAST_B) == pytest.approx(0.1, abs=1e-12)
    assert latency_spread_ms([3.0]) is None  # one round measures no spread


@pytest.mark.parametrize(
    ("median_a", "spread_a", "median_b", "spread_b", "expected"),
    [
        (10.5, 1.0, 10.2, 0.2, True),  # differ by 0.3, spread 1.0: noise
        (10.5, 1.0, 5.1, 0.1, False),  # differ by 5.4: real
        (10.0, 0.5, 10.5, 0.1, True),  # exactly the spread: not beyond it, so noise
        (10.0, 0.5, 10.6, 0.1, False),
        (10.0, None, 5.0, 0.1, None),  # a single round: unknown, not claimed either way
    ],
)
def test_within_noise_compares_the_difference_of_medians_to_the_larger_spread(
    median_a, spread_a, median_b, spread_b, expected
):
    assert within_noise(median_a, spread_a, median_b, spread_b) is expected


def _side(name: str, forward: list[float], forward_backward: list[float]) -> ModelMeasurement:
    ordered = sorted(forward), sorted(forward_backward)
    return ModelMeasurement(
        name=name,
        params=100,
        macs=1000,
        receptive_field=(5, 5),
        forward_ms=ordered[0][len(forward) // 2],
        forward_backward_ms=ordered[1][len(forward_backward) // 2],
        forward_spread_ms=latency_spread_ms(forward),
        forward_backward_spread_ms=latency_spread_ms(forward_backward),
    )


def test_table_marks_a_speedup_inside_the_noise_and_prints_a_real_one():
    # Forward: A 10.5 vs B 10.2 with spreads 1.0 / 0.2 -> noise. Forward+backward: A 10.5 vs B 5.1 -> 2.06x.
    comparison = Comparison(
        a=_side("a", NOISY_A, NOISY_A),
        b=_side("b", NOISY_B, FAST_B),
        agreement=None,
        agreement_reason="different architectures",
        input_size=(1, 28, 28),
        batch_size=2,
        repeats=5,
        threads=1,
    )
    rows = {row[0]: row[-1] for row in comparison.table_rows()}
    assert rows["forward ms"] == f"within noise ({10.5 / 10.2:.2f}x)" == "within noise (1.03x)"
    assert rows["forward+backward ms"] == f"{10.5 / 5.1:.2f}x" == "2.06x"
    document = json.loads(json.dumps(comparison.to_dict()))
    assert document["speedup_within_noise"] == {"forward": True, "forward_backward": False}
    assert document["a"]["latency_spread_ms"]["forward"] == pytest.approx(1.0, abs=1e-12)
    assert "'within noise': the medians differ by no more than the larger interquartile range" in (
        comparison.format_table()
    )


def test_a_single_round_is_not_called_noise_but_says_it_was_not_tested():
    comparison = Comparison(
        a=_side("a", [10.0], [20.0]),
        b=_side("b", [10.1], [5.0]),
        agreement=None,
        agreement_reason="different architectures",
        input_size=(1, 28, 28),
        batch_size=2,
        repeats=1,
        threads=1,
    )
    rows = {row[0]: row[-1] for row in comparison.table_rows()}
    assert rows["forward ms"] == f"{10.0 / 10.1:.2f}x"
    assert comparison.speedup_within_noise == {"forward": None, "forward_backward": None}
    assert "one round measures no spread, so these speedups are not tested against noise" in (
        comparison.timing_note()
    )
