"""What the demo measures of one trained twin: every figure present, MACs counted, latencies timed by
sepconv.timing at batch 1 and 64 in PyTorch and on every deployment engine. No timing decides a result
(the fastest engine is whichever measured fastest; the test checks only that it is the one named)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from sepconv.demo.measure import DEMO_ENGINES, measure_twin
from sepconv.deploy.engines import ENGINES
from sepconv.models import create_model


@pytest.fixture
def quick_timing(monkeypatch):
    # The figures' presence is under test, not their quality: one short round each.
    from sepconv.demo import measure
    from sepconv.timing import TimingPlan

    plan = TimingPlan(warmup_calls=1, min_rounds=1, min_run_seconds=0.0, calls_per_block=1, settle_seconds=0)
    monkeypatch.setattr(measure, "LATENCY_PLAN", plan)


def test_a_twin_is_measured_in_pytorch_and_on_every_engine(tmp_path, quick_timing):
    torch.manual_seed(0)
    model = create_model("separable_cnn", widths=(4, 8, 8, 8))
    images = torch.randn(4, 1, 28, 28)
    data = SimpleNamespace(
        in_channels=1,
        image_size=(28, 28),
        test=[(image, 0) for image in images],
        train=[(image, 1) for image in images],  # what the int8 engines calibrate on
        mean=(0.5,),
        std=(0.5,),
        class_names=[str(digit) for digit in range(10)],
        name="fake",
    )
    trained = SimpleNamespace(
        model=model,
        model_name="separable_cnn",
        channels_last=True,
        test_accuracy=0.5,
        history=[{"val_accuracy": 0.25, "step_seconds": 1.5}, {"step_seconds": 2.0}],
        train_seconds=4.0,
        bf16=False,
        fused=True,
        precision_reason="test",
        model_path=tmp_path / "model.safetensors",
    )
    (tmp_path / "separable_cnn").mkdir()  # the twin's run folder, made by its training
    figures = measure_twin(trained, data, tmp_path)
    # MACs of one image: a 1x28x28 forward of the same model, counted per layer by summarize.
    from sepconv.analysis import summarize

    assert (
        figures["macs"]
        == summarize(create_model("separable_cnn", widths=(4, 8, 8, 8)), (1, 1, 28, 28)).total_macs
    )
    assert figures["params"] == sum(parameter.numel() for parameter in model.parameters())
    assert figures["train_step_seconds"] == 3.5 and figures["val_accuracy"] is None
    for key in ("latency_ms", "latency_ms_batch64", "deployed_latency_ms", "deployed_latency_ms_batch64"):
        assert figures[key] > 0, key
    # Every deployment engine is timed or skipped with its reason, and the fastest one is named.
    deployed, skipped = figures["deployed"], figures["deployed_skipped"]
    assert set(deployed) | set(skipped) == set(DEMO_ENGINES) and not set(deployed) & set(skipped)
    assert "ort" in deployed and "ort-int8" in deployed
    for name, row in deployed.items():
        assert row["name"] == name and row["version"] and Path(row["path"]).is_file()
        assert row["latency_ms"] > 0 and row["latency_ms_batch64"] > 0
    assert figures["deployed_engine"] == min(deployed, key=lambda name: deployed[name]["latency_ms"])
    assert figures["deployed_latency_ms"] == deployed[figures["deployed_engine"]]["latency_ms"]
    fastest = min(deployed, key=lambda name: deployed[name]["latency_ms_batch64"])
    assert figures["deployed_engine_batch64"] == fastest
    if "openvino" in deployed:  # the `openvino` extra is installed
        assert Path(deployed["openvino"]["path"]) == tmp_path / "separable_cnn" / "openvino" / "model.xml"
    for name, reason in skipped.items():
        assert reason == ENGINES[name].unavailable_reason()
    assert Path(figures["onnx_path"]) == tmp_path / "separable_cnn" / "model.onnx"
    assert Path(figures["onnx_path"]).is_file() and figures["onnx_max_abs_diff"] < 1e-4
