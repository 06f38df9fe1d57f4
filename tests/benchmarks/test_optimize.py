"""The optimize benchmark runs end to end on its tiny configuration (``--quick``) and reports every figure.

Its timings are never asserted (the machine is shared); what is checked is that every section ran,
that each figure of the table is there, and the numbers that do not depend on speed: accuracies are
percentages of the same test split, and the cached reruns measured nothing.
"""

from __future__ import annotations

import pytest

from benchmarks import optimize as bench


@pytest.mark.slow
def test_the_quick_run_fills_every_section_and_the_table(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SEPCONV_CACHE_DIR", str(tmp_path / "cache"))
    assert bench.main(["--quick", "--work", str(tmp_path / "work")]) == 0
    table = capsys.readouterr().out
    for figure in (
        "standard_cnn batch 16: ORT speedup (in the run)",
        "standard_cnn batch 16: test accuracy",
        "standard_cnn batch 16: blind route 'every conv r=1, stem kept'",
        "standard_cnn batch 16: blind route 'auto by weight error 0.3'",
        "standard_cnn batch 16: round 1 predicted / measured",
        "standard_cnn batch 16: planning time uncached / cached",
        "torchvision:resnet18: ORT speedup",
    ):
        assert figure in table


def test_the_rows_read_their_figures_from_the_report():
    document = {
        "latency": {"speedup": 3.2},
        "accuracy": {"fine_tuned": 98.5, "converted": 97.0, "original": 98.6},
        "rounds": [{"round": 1, "predicted_ms": 1.0, "measured_ms": 1.1, "relative_error": -1 / 11}],
    }
    report = {
        "standard_cnn": {
            "batches": {
                1: {
                    "document": document,
                    "refusal": None,
                    "wall_s": 200.0,
                    "planning_s": 90.0,
                    "cached_planning_s": 12.5,
                    "side_by_side_ms": {"original": 4.0, "optimized": 1.0, "r1": 0.8},
                    "blind_accuracy": {"r1": 98.1},
                }
            }
        },
        "torchvision": {"tv": {"document": None, "refusal": "speedup 2 is out of reach"}},
    }
    rows = {figure: (measured, target) for figure, measured, target in bench.rows(report)}
    assert rows["standard_cnn batch 1: ORT speedup (in the run)"] == ("3.20x", ">= 3x")
    assert rows["standard_cnn batch 1: blind route 'r1'"] == (
        "5.00x (0.800 ms), 98.10%",
        "optimize: 4.00x, 98.50%",
    )
    assert rows["standard_cnn batch 1: round 1 predicted / measured"][0] == "1.000 / 1.100 ms (-9.1%)"
    assert rows["standard_cnn batch 1: planning time uncached / cached"][0] == "90 s / 12.5 s"
    assert rows["tv: plan"] == ("refused: speedup 2 is out of reach", ">= 2x")
