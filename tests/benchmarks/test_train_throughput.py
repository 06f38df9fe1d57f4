"""The training-throughput benchmark runs end to end and its derived figures follow their formulas.

Timings are never asserted (the machine is shared); what is checked is that every execution path is
present or skipped with its reason, that the MAC ratios and byte counts equal hand-worked numbers, and
that the interleaved timer calls each path as often and in the order it says.
"""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import train_throughput as bench
from sepconv.machine import cpu_features, cpu_has_native_bf16, cpu_summary
from sepconv.train.precision import choose_precision

# Tiny sizes: every section and path runs once. bf16 is forced on so that its rows are exercised
# whatever the CPU.
TINY = bench.Settings(
    rounds=1,
    calls_per_round=1,
    warmup_calls=0,
    twin_batch=2,
    mobilenet_batch=2,
    block_batch=1,
    block_shapes=((8, 8), (16, 4)),
    depthwise_shape=(8, 16),
    depthwise_batch=1,
    copy_megabytes=1,
    bf16="on",
    compile=False,
)


@pytest.fixture(scope="module")
def report():
    # One thread: on a loaded 2-core machine two OpenMP threads wait on each other at every barrier,
    # which made this run 10x slower; the figures checked here do not depend on the thread count.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield bench.run(TINY, show=False)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_every_twin_path_is_timed_or_skipped_with_its_reason(report):
    twins = report["twins"]
    timed = [path.name for path in bench.TWIN_PATHS if not path.compiled]
    assert list(twins["paths"]) == timed
    assert twins["skipped"] == {"compiled_channels_last_fp32": "--skip-compile"}
    for row in twins["paths"].values():
        assert row["standard_ms"] > 0 and row["separable_ms"] > 0
        assert row["ratio"] == row["standard_ms"] / row["separable_ms"]
    fastest = twins["fastest"]
    assert fastest["standard_ms"] == min(row["standard_ms"] for row in twins["paths"].values())
    assert fastest["separable_ms"] == min(row["separable_ms"] for row in twins["paths"].values())


@pytest.mark.slow
def test_the_default_row_is_what_the_precision_rule_picks(report):
    # The twins are convolutional, so the rule picks channels_last; bf16 only with native bf16 units;
    # the fused kernels unless the rule says otherwise (its field, where it has one).
    from sepconv.models import create_model

    for twin in ("standard", "separable"):
        choice = choose_precision(
            create_model(f"{twin}_cnn"), on_gpu=False, channels_last="auto", bf16="auto"
        )
        fused = getattr(choice, "fused", None)
        expected = {"channels_last": True, "bf16": cpu_has_native_bf16(), "fused": fused is None or fused}
        marked = [name for name, row in report["twins"]["paths"].items() if twin in row["default_for"]]
        assert marked == [
            path.name
            for path in bench.TWIN_PATHS
            if not path.compiled
            and (path.channels_last, path.bf16, path.fused)
            == (expected["channels_last"], expected["bf16"], expected["fused"])
        ]
        assert len(marked) == 1


@pytest.mark.slow
def test_mobilenet_compares_the_default_with_the_tutorial_loop(report):
    mobilenet = report["mobilenet_v2"]
    assert mobilenet["paths"]["tutorial"]["channels_last"] is False
    assert mobilenet["paths"]["tutorial"]["bf16"] is False
    assert mobilenet["paths"]["tutorial"]["fused"] is False
    assert mobilenet["paths"]["sepconv_default"]["channels_last"] is True
    for row in mobilenet["paths"].values():
        assert row["images_per_s"] == pytest.approx(1000 * TINY.mobilenet_batch / row["step_ms"], rel=1e-12)


@pytest.mark.slow
def test_block_figures_follow_the_mac_ratio(report):
    # 9C / (9 + C) at C = 8 and 16: 72/17 and 144/25 (see the next test for the formula).
    hand_worked = {8: 72 / 17, 16: 144 / 25}
    shapes = report["blocks"]["shapes"]
    assert [(entry["channels"], entry["size"]) for entry in shapes] == list(TINY.block_shapes)
    for entry in shapes:
        for kind in ("conv", "conv_norm_act"):
            assert entry[kind]["mac_ratio"] == pytest.approx(hand_worked[entry["channels"]], rel=1e-12)
            for mode in ("forward", "forward_backward"):
                figures = entry[kind][mode]
                assert figures["speedup"] == figures["standard_ms"] / figures["separable_ms"]
                assert figures["realized_over_mac"] == figures["speedup"] / entry[kind]["mac_ratio"]


@pytest.mark.parametrize(("channels", "size"), bench.BLOCK_SHAPES)
def test_block_mac_ratios_equal_the_hand_worked_formula(channels, size):
    # Per output pixel a 3x3 conv C->C costs 9C² MACs, depthwise 3x3 + pointwise 1x1 costs 9C + C²,
    # so the ratio is 9C / (9 + C): 288/41, 1152/137, 2304/265, 4608/521. BatchNorm and ReLU add no
    # MACs. Integer MAC counts divided once: equal to float rounding (1e-12 relative).
    hand_worked = {32: 288 / 41, 128: 1152 / 137, 256: 2304 / 265, 512: 4608 / 521}[channels]
    assert bench.mac_ratio_formula(channels) == pytest.approx(hand_worked, rel=1e-12)
    for make_pair in (bench.conv_pair, bench.conv_norm_act_pair):
        assert bench.mac_ratio(*make_pair(channels), channels, size) == pytest.approx(hand_worked, rel=1e-12)


@pytest.mark.slow
def test_depthwise_roofline_counts_the_bytes_it_must_move(report):
    result = report["depthwise_backward"]
    # grad_output read, input read, grad_input written: 3 x (1 x 8 x 16 x 16) float32 values.
    assert result["backward_bytes"] == 3 * 1 * 8 * 16 * 16 * 4 == 24576
    # The copy reads 1 MiB and writes 1 MiB.
    assert result["copy_bytes"] == 2 * 2**20
    assert result["bandwidth_gb_s"] == pytest.approx(
        result["copy_bytes"] / result["copy_ms"] / 1e6, rel=1e-12
    )
    assert result["roofline_ms"] == pytest.approx(
        result["backward_bytes"] / result["copy_bytes"] * result["copy_ms"], rel=1e-12
    )
    assert result["fraction_of_roofline"] == pytest.approx(
        result["roofline_ms"] / result["backward_ms"], rel=1e-12
    )


@pytest.mark.slow
def test_report_is_json_with_every_section(report):
    # What --json writes: plain JSON, with the settings of the run and every section's figures.
    decoded = json.loads(json.dumps(report))
    assert {"machine", "settings", "twins", "mobilenet_v2", "blocks", "depthwise_backward"} <= set(decoded)
    assert decoded["settings"]["block_shapes"] == [list(shape) for shape in TINY.block_shapes]
    assert decoded["settings"]["twin_batch"] == 2 and decoded["settings"]["compile"] is False
    assert decoded["machine"]["threads"] == torch.get_num_threads()
    # Every figure names the ISA it was taken on: the same line and flags as sepconv.machine reports.
    assert decoded["machine"]["cpu"] == cpu_summary()
    assert decoded["machine"]["isa"] == cpu_features().to_dict()
    assert decoded["machine"]["native_bf16"] == decoded["machine"]["isa"]["native_bf16"]
    assert decoded["settings"]["heap"] == "kept"
    assert decoded["twins"]["paths"] == report["twins"]["paths"]


def test_interleaved_rounds_call_every_path_in_rotated_order():
    calls = []
    functions = {name: (lambda name=name: calls.append(name)) for name in ("a", "b", "c")}
    settings = bench.Settings(rounds=3, calls_per_round=2, warmup_calls=1)
    medians = bench.interleaved_medians_ms(functions, settings)
    warmup, timed = calls[:3], calls[3:]
    assert warmup == ["a", "b", "c"]
    # Each round starts one path later: abc, bca, cab, each path twice in a row.
    assert timed == [name for order in ("abc", "bca", "cab") for name in order for _ in range(2)]
    assert set(medians) == {"a", "b", "c"}


def test_quick_and_flags_build_the_settings():
    settings, json_path = bench.settings_from_arguments(["--quick", "--json", "out.json"])
    assert settings == bench.QUICK and json_path == "out.json"
    assert settings.compile is False and settings.rounds == 2
    settings, _ = bench.settings_from_arguments(["--rounds", "4", "--skip-compile", "--bf16", "off"])
    assert (settings.rounds, settings.compile, settings.bf16) == (4, False, "off")
    assert settings.time_bf16() is False
    assert settings.heap == "kept"
    settings, _ = bench.settings_from_arguments(["--heap", "released"])
    assert settings.heap == "released"
    with pytest.raises(SystemExit):
        bench.settings_from_arguments(["--rounds", "0"])
