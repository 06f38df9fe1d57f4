"""``benchmark_paths`` and ``sepconv bench``: every (path, batch) pair reported, arithmetic that holds,
output differences measured against eager float32, skips with reasons. No timing decides a test."""

from __future__ import annotations

import json

import pytest
import torch
from tests.helpers.cli import override, run_sepconv
from torch import nn

from sepconv.deploy import bench
from sepconv.deploy.bench import EXECUTION_PATHS, TRAIN_PATHS, ExecutionPath, benchmark_paths
from sepconv.machine import cpu_has_native_bf16
from sepconv.models import create_model

INPUT_SIZE = (1, 28, 28)
# Short runs: correctness of the report, not the quality of the numbers, is under test.
FAST = {
    "min_run_seconds": 0.0,
    "min_rounds": 3,
    "min_block_seconds": 0.001,
    "settle_seconds": 0.0,
    "warmup_calls": 1,
}


def tiny_model() -> nn.Module:
    """The separable twin at tiny widths, with BatchNorm statistics far from the identity.

    A freshly built BatchNorm (mean 0, var 1, weight 1, bias 0) folds into an almost unchanged conv;
    random statistics make the folded path compute something genuinely different to compare.
    """
    model = create_model("separable_cnn", widths=(4, 8, 8, 8))
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                channels = module.num_features
                module.running_mean.copy_(torch.rand(channels, generator=generator) - 0.5)
                module.running_var.copy_(0.5 + 1.5 * torch.rand(channels, generator=generator))
                module.weight.copy_(0.5 + torch.rand(channels, generator=generator))
                module.bias.copy_(0.4 * torch.rand(channels, generator=generator) - 0.2)
    return model


@pytest.fixture(autouse=True)
def _one_thread():
    # The tests check the report, not the speed. With two threads, every call waits at OpenMP barriers,
    # and a second busy process on a 2-core machine makes those waits 100x longer; one thread does not.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@torch.no_grad()
def output_scale(batch_size: int) -> float:
    """The largest |output| of the tiny model on random images: the scale tolerances are relative to."""
    return float(tiny_model().eval()(torch.randn(batch_size, *INPUT_SIZE)).abs().max())


def by_key(results):
    return {(result.path, result.batch_size): result for result in results}


def check_arithmetic(results, batch_sizes):
    """speedup, images/s and min/median/max follow from the reported medians, exactly."""
    results = by_key(results)
    for (_, batch), result in results.items():
        eager = results["eager", batch]
        assert eager.speedup == 1.0
        assert result.speedup == eager.median_ms / result.median_ms
        assert result.images_per_s == batch * 1000.0 / result.median_ms
        assert 0 < result.min_ms <= result.median_ms <= result.max_ms
    assert {batch for _, batch in results} == set(batch_sizes)


def test_every_requested_path_and_batch_is_reported_with_consistent_numbers():
    paths = ["eager", "channels_last", "folded_channels_last", "bf16"]
    report = benchmark_paths(tiny_model(), batch_sizes=(1, 3), paths=paths, **FAST)

    ran = ["eager", "channels_last", "folded_channels_last"] + (["bf16"] if cpu_has_native_bf16() else [])
    assert [(result.path, result.batch_size) for result in report.results] == [
        (path, batch) for path in ran for batch in (1, 3)
    ]
    check_arithmetic(report.results, (1, 3))
    assert report.input_size == INPUT_SIZE  # the model's registered size, as default_input_size says
    assert report.threads == torch.get_num_threads()
    assert report.train_results is None


def test_output_differences_are_against_eager_float32():
    report = benchmark_paths(
        tiny_model(), batch_sizes=(1, 3), paths=["channels_last", "folded_channels_last"], **FAST
    )
    results = by_key(report.results)
    scale = output_scale(3)
    for batch in (1, 3):
        assert results["eager", batch].max_abs_diff == 0.0  # eager against itself
        # Both paths compute the same float32 function with sums in another order (NHWC kernels, BN
        # scale moved into the weights): a few units of roundoff (6e-8 relative) over at most
        # 72-term sums in 5 layers, far below 1e-5 of the output's scale.
        for path in ("channels_last", "folded_channels_last"):
            assert results[path, batch].max_abs_diff <= 1e-5 * scale


def test_a_wrong_path_shows_its_full_error(monkeypatch):
    # A path that returns zeros: its difference must be the largest |eager output| on the very input
    # it was given, computed here with plain PyTorch.
    model = tiny_model().eval()
    seen: dict[int, torch.Tensor] = {}

    def prepare(workspace):
        def bind(images):
            seen[images.shape[0]] = images.clone()
            return lambda: torch.zeros(images.shape[0], 10)

        return bind

    monkeypatch.setitem(EXECUTION_PATHS, "zeros", ExecutionPath("zeros", "always zero", prepare))
    report = benchmark_paths(model, batch_sizes=(1, 2), paths=["zeros"], **FAST)
    results = by_key(report.results)
    with torch.inference_mode():
        for batch in (1, 2):
            expected = float(model(seen[batch]).abs().max())
            assert results["zeros", batch].max_abs_diff == pytest.approx(expected, rel=1e-6, abs=0)
            # |0 - eager| at its largest is the largest |eager|: relative difference exactly 1.
            assert results["zeros", batch].max_rel_diff == pytest.approx(1.0, rel=1e-6, abs=0)
    check_arithmetic(report.results, (1, 2))


def test_extra_paths_are_timed_in_the_same_rounds_after_the_requested_ones():
    model = tiny_model().eval()
    doubled = ExecutionPath(
        "doubled", "eager x 2", lambda workspace: lambda images: lambda: 2 * model(images)
    )
    report = benchmark_paths(model, batch_sizes=(1,), paths=["channels_last"], extra_paths=[doubled], **FAST)
    assert [result.path for result in report.results] == ["eager", "channels_last", "doubled"]
    # 2y - y = y: the difference is the largest |eager output|, relative difference 1.
    assert report.results[2].max_rel_diff == pytest.approx(1.0, rel=1e-6, abs=0)
    check_arithmetic(report.results, (1,))
    with pytest.raises(ValueError, match="extra_paths must be ExecutionPaths with new names"):
        benchmark_paths(model, batch_sizes=(1,), extra_paths=[EXECUTION_PATHS["eager"]], **FAST)


def test_bf16_runs_only_where_the_cpu_has_native_bf16():
    report = benchmark_paths(tiny_model(), batch_sizes=(2,), paths=["bf16"], train=True, **FAST)
    if cpu_has_native_bf16():
        bf16 = by_key(report.results)["bf16", 2]
        scale = output_scale(2)
        # bf16 keeps 8 significant bits (relative step 2^-8 = 0.4%) and rounds every layer's inputs;
        # 5% of the output's scale bounds that over 5 layers with room, and still catches a broken path.
        assert 0 < bf16.max_abs_diff <= 0.05 * scale
        assert ("bf16", 2) in by_key(report.train_results)
    else:
        for skipped in (report.skipped, report.train_skipped):
            [(path, reason)] = skipped
            assert path == "bf16" and "bf16" in reason and "native" in reason
        assert "bf16" not in {result.path for result in report.results + report.train_results}


def test_onnx_fp32_matches_eager():
    report = benchmark_paths(tiny_model(), batch_sizes=(1, 3), paths=["onnx_fp32"], **FAST)
    assert report.skipped == []
    results = by_key(report.results)
    for batch in (1, 3):
        # export_onnx itself verifies float32 to 1e-4; ONNX Runtime's fused kernels differ from
        # PyTorch's by float32 roundoff only (3e-8 measured here).
        assert results["onnx_fp32", batch].max_abs_diff <= 1e-4
    check_arithmetic(report.results, (1, 3))


@pytest.mark.slow
def test_onnx_int8_is_close_to_eager():
    # Static quantization (calibration runs and graph rewriting) takes several seconds.
    report = benchmark_paths(tiny_model(), batch_sizes=(1, 3), paths=["onnx_int8"], **FAST)
    assert report.skipped == []
    results = by_key(report.results)
    scale = output_scale(3)
    for batch in (1, 3):
        # int8 is not exact; 8-bit activations calibrated on random images err by a few percent of
        # the output range here (5% measured); a quarter of the range still catches a wrong graph.
        assert 0 < results["onnx_int8", batch].max_abs_diff <= 0.25 * scale
    check_arithmetic(report.results, (1, 3))


def test_training_steps_are_timed_for_the_training_paths():
    model = tiny_model().train()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    report = benchmark_paths(
        model, batch_sizes=(2, 4), paths=["channels_last", "folded_channels_last"], train=True, **FAST
    )
    assert [(result.path, result.batch_size) for result in report.train_results] == [
        ("eager", 2),
        ("eager", 4),
        ("channels_last", 2),
        ("channels_last", 4),
    ]  # folded_channels_last has no training path
    assert all(result.max_abs_diff is None for result in report.train_results)
    check_arithmetic(report.train_results, (2, 4))
    assert report.train_skipped == []
    # Every path trains its own copy: the caller's model is untouched, still in train mode.
    assert model.training
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_report_document_and_tables():
    report = benchmark_paths(tiny_model(), batch_sizes=(1,), paths=["bf16"], train=True, **FAST)
    document = report.to_dict()
    assert list(document) == [
        "input_size",
        "threads",
        "cpu",
        "runtimes",
        "results",
        "train_results",
        "skipped",
        "train_skipped",
    ]
    # every figure names the CPU (with its instruction sets) and what ran it, with which settings
    from sepconv.machine import cpu_summary

    assert document["cpu"] == cpu_summary()
    assert document["runtimes"]["eager"] == {
        "engine": f"PyTorch {torch.__version__}",
        "precision": "fp32",
        "settings": f"{report.threads} intra-op threads",
    }
    eager = document["results"][0]
    assert eager == {
        "path": "eager",
        "batch_size": 1,
        "latency_ms": {
            "median": report.results[0].median_ms,
            "min": report.results[0].min_ms,
            "max": report.results[0].max_ms,
        },
        "images_per_s": report.results[0].images_per_s,
        "speedup": 1.0,
        "max_abs_diff": 0.0,
        "max_rel_diff": 0.0,
    }
    assert "max_abs_diff" not in document["train_results"][0]
    assert "max_rel_diff" not in document["train_results"][0]
    table = report.format_table()
    assert table.splitlines()[0] == "inference"
    assert table.splitlines()[1].split() == [
        "path", "batch", "median", "ms", "min", "ms", "max", "ms", "images/s", "speedup", "max", "|diff|", "rel", "diff"
    ]  # fmt: skip
    assert f"{report.results[0].median_ms:.3f}" in table
    if not cpu_has_native_bf16():
        assert "skipped:\n  bf16: this CPU has no native bf16" in table


def test_progress_reaches_its_total():
    calls = []
    benchmark_paths(
        tiny_model(),
        batch_sizes=(1,),
        paths=["channels_last"],
        train=True,
        progress=lambda *call: calls.append(call),
        **FAST,
    )
    completed = [done for _, done, _ in calls]
    assert completed == sorted(completed)
    description, done, total = calls[-1]
    assert done == total and description.startswith("timing training")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            {"paths": ["eager", "onnx_fp16"]},
            "paths has unknown name(s) 'onnx_fp16'; valid: eager, channels_last",
        ),
        ({"batch_sizes": (1, 0)}, "batch_sizes must be one or more positive integers, got 0 in (1, 0)"),
        ({"batch_sizes": ()}, "batch_sizes must be one or more positive integers"),
        ({"input_size": (28, 28)}, "input_size must be 3 positive integers"),
        ({"min_rounds": 0}, "min_rounds must be a positive integer, got 0"),
        ({"min_run_seconds": float("nan")}, "min_run_seconds must be a finite number >= 0"),
    ],
)
def test_bad_arguments_are_named(arguments, message):
    with pytest.raises(ValueError) as raised:
        benchmark_paths(tiny_model(), **arguments)
    assert message in str(raised.value)


def test_a_model_without_a_registered_size_needs_one():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(1), nn.LazyLinear(3))
    with pytest.raises(ValueError, match="give the input size explicitly"):
        benchmark_paths(model)
    model(torch.zeros(1, 1, 8, 8))  # materialize the lazy layer for 8x8 inputs
    report = benchmark_paths(model, input_size=(1, 8, 8), batch_sizes=(2,), paths=["eager"], **FAST)
    assert [(result.path, result.batch_size) for result in report.results] == [("eager", 2)]


@pytest.mark.slow
def test_compiled_paths_run_and_match_eager():
    # torch.compile takes tens of seconds on 2 cores even for a tiny model (inference with freezing,
    # then forward and backward for training): one test covers both.
    report = benchmark_paths(tiny_model(), batch_sizes=(2,), paths=["compiled"], train=True, **FAST)
    assert report.skipped == report.train_skipped == [], (report.skipped, report.train_skipped)
    assert [(result.path, result.batch_size) for result in report.train_results] == [
        ("eager", 2),
        ("compiled", 2),
    ]
    check_arithmetic(report.train_results, (2,))
    compiled = by_key(report.results)["compiled", 2]
    scale = output_scale(2)
    # Inductor fuses and reorders float32 arithmetic (BN folded by freezing): roundoff only, as for
    # the folded path above.
    assert compiled.max_abs_diff <= 1e-5 * scale
    check_arithmetic(report.results, (2,))


def test_every_path_is_documented_and_train_paths_are_the_trainable_ones():
    assert list(EXECUTION_PATHS) == [
        "eager",
        "channels_last",
        "folded_channels_last",
        "bf16",
        "compiled",
        "onnx_fp32",
        "onnx_int8",
        "openvino_fp32",
        "openvino_bf16",
        "openvino_int8",
    ]
    assert TRAIN_PATHS == ("eager", "channels_last", "bf16", "compiled")
    assert all(path.name == name and path.description for name, path in EXECUTION_PATHS.items())
    assert bench.PathUnavailableError.__doc__


# The command line.

CLI = ["bench", "separable_cnn", "--paths", "eager,channels_last", "--batch-sizes", "1,2", "--seconds", "0"]


def test_cli_json_is_one_document(capsys):
    code, out, err = run_sepconv([*CLI, "--json"], capsys)
    assert code == 0, err
    document = json.loads(out)  # raises on anything after the document
    assert list(document) == ["model", "input_size", "threads", "cpu", "runtimes", "results", "skipped"]
    assert document["model"] == "separable_cnn"
    assert document["input_size"] == [1, 28, 28]
    assert document["threads"] == torch.get_num_threads()
    assert [(result["path"], result["batch_size"]) for result in document["results"]] == [
        ("eager", 1),
        ("eager", 2),
        ("channels_last", 1),
        ("channels_last", 2),
    ]
    for result in document["results"]:
        assert set(result) == {
            "path",
            "batch_size",
            "latency_ms",
            "images_per_s",
            "speedup",
            "max_abs_diff",
            "max_rel_diff",
        }
        assert set(result["latency_ms"]) == {"median", "min", "max"}
    assert document["skipped"] == []
    assert err == ""  # no progress bar with --json


def test_cli_json_with_training_and_input_size(capsys):
    code, out, err = run_sepconv([*CLI, "--train", "--input-size", "20", "--json"], capsys)
    assert code == 0, err
    document = json.loads(out)
    assert document["input_size"] == [1, 20, 20]  # H with the model's own channels
    assert [(result["path"], result["batch_size"]) for result in document["train_results"]] == [
        ("eager", 1),
        ("eager", 2),
        ("channels_last", 1),
        ("channels_last", 2),
    ]
    assert document["train_skipped"] == []


def test_cli_table(capsys):
    code, out, _ = run_sepconv(override(CLI, ["--paths", "eager,bf16", "--input-size", "1,24,24"]), capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"separable_cnn: input 1x24x24, {torch.get_num_threads()} threads"
    assert lines[1] == "inference"
    assert lines[2].split()[:3] == ["path", "batch", "median"]
    assert set(lines[3]) == {"-", " "}  # the rule under the header
    assert [line.split()[:2] for line in lines[4:6]] == [["eager", "1"], ["eager", "2"]]
    if not cpu_has_native_bf16():
        assert "  bf16: this CPU has no native bf16" in out


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            ["--paths", "eager,fast"],
            "sepconv bench: error: argument --paths: unknown path 'fast'; valid: eager, channels_last, "
            "folded_channels_last, bf16, compiled, onnx_fp32, onnx_int8, openvino_fp32, openvino_bf16, "
            "openvino_int8 (see 'sepconv bench --help')",
        ),
        (["--batch-sizes", "1,0"], "sepconv bench: error: --batch-sizes must be positive integers"),
        # N,C,H,W is accepted now (one meaning of --input-size on every command); a bad size is not
        (
            ["--input-size", "0,1,28,28"],
            "sepconv bench: error: argument --input-size: must be C,H,W or N,C,H,W of positive integers",
        ),
    ],
)
def test_cli_errors_are_one_line(capsys, arguments, message):
    code, out, err = run_sepconv(["bench", "separable_cnn", *arguments], capsys)
    assert code == 2
    assert out == ""
    assert err.startswith(message) and err.count("\n") == 1


def test_a_model_that_cannot_train_at_a_batch_size_is_skipped_with_the_reason():
    # BatchNorm after global pooling sees one value per channel at batch 1: training cannot normalize.
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.AdaptiveAvgPool2d(1), nn.BatchNorm2d(4), nn.Flatten(1), nn.Linear(4, 3)
    )
    calls = []
    report = benchmark_paths(
        model,
        input_size=(1, 8, 8),
        batch_sizes=(1, 2),
        paths=["channels_last"],
        train=True,
        progress=lambda *call: calls.append(call),
        # a time budget with nothing left to time in the training phase must still end
        **{**FAST, "min_run_seconds": 0.05},
    )
    assert calls[-1] == ("timing training: nothing to time", calls[-1][2], calls[-1][2])
    assert [(result.path, result.batch_size) for result in report.results] == [
        ("eager", 1),
        ("eager", 2),
        ("channels_last", 1),
        ("channels_last", 2),
    ]
    assert report.train_results == []
    assert [path for path, _ in report.train_skipped] == ["eager", "channels_last"]
    for _, reason in report.train_skipped:
        assert "training step at batch 1 fails" in reason and "more than 1 value per channel" in reason
