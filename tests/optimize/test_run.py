"""The ``sepconv optimize`` pipeline: the plan applied, re-measured, corrected, delivered and described.

The measuring calls run on the MAC clock of :mod:`tests.helpers.optimize_run` (a layer or model takes a
time proportional to its MACs, exactly), so every figure the planner and the correction rounds produce
can be worked out here from the tables; everything else (sites, sensitivity, planner, conversion,
export) is the real code.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from tests.helpers.optimize import is_consistent
from tests.helpers.optimize_run import (
    ENGINE_SCALE,
    FIXED_MS,
    MACS_PER_MS,
    install_mac_clock,
    mac_costs,
    model_ms,
)

from sepconv import load_model
from sepconv.analysis import summarize
from sepconv.convert import to_low_rank, to_separable
from sepconv.deploy import OnnxModel
from sepconv.deploy.engines import get_engine
from sepconv.models import create_model
from sepconv.optimize.planner import BudgetError, LatencyModel, choose_plan
from sepconv.optimize.run import OptimizeConfig, apply_plan, optimize_model
from sepconv.optimize.sensitivity import SensitivityTable, loss_options, measure_sensitivity
from sepconv.optimize.sites import find_sites

WIDTHS = [8, 16, 16, 32]
SIZE = (1, 28, 28)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("standard_cnn", widths=WIDTHS).eval()


def test_apply_plan_is_to_separable_then_to_low_rank_and_reloads(tmp_path):
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.Conv2d(8, 8, 3),
        torch.nn.Flatten(),
        torch.nn.Linear(8 * 6 * 6, 300),
    ).eval()
    applied = apply_plan(model, {"0": None, "1": 2, "3": 16}, input_size=(3, 8, 8))
    expected, _ = to_separable(model, depth_multiplier={"1": 2}, input_size=(3, 8, 8))
    expected, _ = to_low_rank(expected, rank={"3": 16})
    x = torch.randn(2, 3, 8, 8)
    assert type(applied[0]) is torch.nn.Conv2d
    assert applied[1].depthwise.out_channels == 16 and applied[3].first.out_features == 16
    assert torch.equal(applied(x), expected(x))
    # the model passed in is untouched, and a plan that keeps everything is a copy
    assert type(model[1]) is torch.nn.Conv2d
    kept = apply_plan(model, {"0": None, "1": None})
    assert kept is not model and torch.equal(kept(x), model(x))


def test_apply_plan_at_the_exact_rank_computes_the_same_and_is_recorded():
    model = _model()
    sites, _ = find_sites(model, SIZE)
    exact = {site.name: site.max_rank for site in sites if site.kind == "conv"}
    applied = apply_plan(model, exact)
    x = torch.randn(3, *SIZE)
    torch.testing.assert_close(applied(x), model(x), atol=1e-4, rtol=1e-4)
    from sepconv.io import model_transforms

    assert model_transforms(applied)[0]["kwargs"]["depth_multiplier"] == exact


def test_apply_plan_refuses_a_layer_that_is_no_conv_or_linear():
    with pytest.raises(ValueError, match=r"ranks names 'features\.0\.1', a BatchNorm2d"):
        apply_plan(_model(), {"features.0.1": 1})


@pytest.fixture
def mac_clock(monkeypatch, tmp_path):
    monkeypatch.setenv("SEPCONV_CACHE_DIR", str(tmp_path / "cache"))
    install_mac_clock(monkeypatch)


@pytest.fixture
def model_file(tmp_path):
    from sepconv import save_model

    (tmp_path / "source").mkdir()
    return save_model(_model(), tmp_path / "source" / "random.safetensors")


def test_without_data_the_plan_is_the_planners_on_the_corrected_model_and_the_files_agree(
    tmp_path, mac_clock, model_file
):
    model = _model()
    config = OptimizeConfig(model=str(model_file), out_dir=str(tmp_path / "out"), speedup=2.0, rounds=2)
    document = optimize_model(config)

    original_ms = model_ms(model, SIZE, 1)
    sites, _ = find_sites(model, SIZE)
    assert document["format"] == "sepconv-optimize/1" and document["dataset"] is None
    assert document["loss_unit"] == "relative output error" and document["accuracy"] is None
    assert [layer["name"] for layer in document["layers"]] == [site.name for site in sites]
    assert any("no data set" in note for note in document["notes"])

    # round 1: the latency model anchored on the original; the engine is ENGINE_SCALE slower than the
    # layers' sum, so the plan is predicted too fast, misses, and the refit through the two points is exact
    rounds = document["rounds"]
    first = rounds[0]["latency_model"]
    keep_ms = sum(site.macs for site in sites) / MACS_PER_MS
    assert first["scale"] == 1.0
    assert math.isclose(first["fixed_ms"], original_ms - keep_ms)
    assert rounds[0]["predicted_ms"] <= original_ms / 2.0 < rounds[0]["measured_ms"]
    assert len(rounds) == 2
    assert math.isclose(rounds[1]["latency_model"]["scale"], ENGINE_SCALE)
    assert math.isclose(rounds[1]["predicted_ms"], rounds[1]["measured_ms"], rel_tol=1e-9)
    for row in rounds:
        assert math.isclose(
            row["relative_error"], (row["predicted_ms"] - row["measured_ms"]) / row["measured_ms"]
        )
        # the MAC clock times the original alike in every round: planned for and judged by the same ms
        assert math.isclose(row["budget_ms"], original_ms / 2.0)
        assert math.isclose(row["plan_budget_ms"], original_ms / 2.0)

    # the delivered plan is the planner's choice from the tables, on the corrected latency model
    engine = get_engine("ort")
    table = SensitivityTable(tmp_path / "cache" / "sensitivity.json")
    base, sensitivity = measure_sensitivity(model, sites, calibration=_calibration(), table=table)
    assert base is None and all(entry.cached for ranks in sensitivity.values() for entry in ranks.values())
    layers = loss_options(sites, mac_costs(model, sites, engine, batch_size=1), sensitivity, None)
    expected = choose_plan(layers, LatencyModel(**rounds[1]["latency_model"]), max_ms=original_ms / 2.0)
    ranks = {layer["name"]: layer["rank"] for layer in document["layers"]}
    assert ranks == expected.ranks
    assert document["latency"]["speedup"] >= 2.0
    assert math.isclose(document["latency"]["speedup"], original_ms / rounds[1]["measured_ms"])
    assert is_consistent(document)

    # the written model is the plan (MACs as summarize counts them) and its ONNX file computes the same
    written = load_model(document["files"]["model"])
    assert document["macs"]["after"] == summarize(written, (1, *SIZE)).total_macs
    assert document["macs"]["before"] == summarize(model, (1, *SIZE)).total_macs
    assert document["params"]["after"] == sum(p.numel() for p in written.parameters())
    x = torch.randn(4, *SIZE)
    onnx = OnnxModel(document["files"]["deployable"])
    np.testing.assert_allclose(onnx(x.numpy()), written.eval()(x).detach().numpy(), atol=1e-4, rtol=1e-3)
    assert json.loads((tmp_path / "out" / "plan.json").read_text()) == json.loads(json.dumps(document))
    assert (tmp_path / "out" / "report.html").is_file()
    assert document["cached"]["costs"] == {
        "measured": sum(1 + len(site.ranks) for site in sites),
        "reused": 0,
    }


def _calibration() -> torch.Tensor:
    from sepconv.optimize.run import CALIBRATION_SEED

    generator = torch.Generator().manual_seed(CALIBRATION_SEED)
    return torch.randn(64, *SIZE, generator=generator)


def test_an_impossible_budget_names_the_best_speedup_and_leaves_no_folder(tmp_path, mac_clock):
    config = OptimizeConfig(model="standard_cnn", out_dir=str(tmp_path / "out"), speedup=1000.0)
    with pytest.raises(BudgetError) as refused:
        optimize_model(config)
    assert refused.value.param == "speedup"
    message = str(refused.value)
    assert message.startswith("speedup 1000 is out of reach on this engine: the fastest plan is predicted at")
    assert "x the original's" in message and "relative output error" in message
    assert not (tmp_path / "out").exists()


def test_with_no_correction_round_a_missed_budget_is_delivered_with_a_note(tmp_path, mac_clock, model_file):
    original_ms = model_ms(_model(), SIZE, 1)
    config = OptimizeConfig(
        model=str(model_file), out_dir=str(tmp_path / "out"), latency_ms=original_ms * 0.6, rounds=0
    )
    document = optimize_model(config)
    (only,) = document["rounds"]
    # the engine runs the plan slower than the layers' sum predicted (ENGINE_SCALE < 1 saved less)
    assert only["predicted_ms"] <= original_ms * 0.6 < only["measured_ms"]
    assert document["budget"] == {"speedup": None, "latency_ms": original_ms * 0.6, "max_accuracy_drop": None}
    assert any(
        note.startswith(f"the budget ({original_ms * 0.6:g} ms) was missed after 1 measured plan")
        for note in document["notes"]
    )
    assert FIXED_MS < document["latency"]["optimized_ms"] < document["latency"]["original_ms"]


def test_a_budget_met_far_faster_than_predicted_is_refitted_for_a_plan_that_loses_less(
    tmp_path, mac_clock, model_file, monkeypatch
):
    import tests.helpers.optimize_run as clock

    # the engine saves 1.5x what the layers timed alone promise: the first plan beats its prediction
    monkeypatch.setattr(clock, "ENGINE_SCALE", 1.5)
    model = _model()
    original_ms = clock.model_ms(model, SIZE, 1)
    config = OptimizeConfig(model=str(model_file), out_dir=str(tmp_path / "out"), speedup=1.5, rounds=2)
    document = optimize_model(config)
    first, second = document["rounds"]
    assert first["measured_ms"] <= original_ms / 1.5 and first["relative_error"] > 0.2
    # refitted through the two points, exactly: the second plan is the least lossy within the budget
    assert math.isclose(second["latency_model"]["scale"], 1.5)
    assert math.isclose(second["predicted_ms"], second["measured_ms"], rel_tol=1e-9)
    losses = [plan["predicted_loss"] for plan in document["pareto"] if plan["chosen"]]
    sites, _ = find_sites(model, SIZE)
    table = SensitivityTable(tmp_path / "cache" / "sensitivity.json")
    _, sensitivity = measure_sensitivity(model, sites, calibration=_calibration(), table=table)
    layers = loss_options(sites, mac_costs(model, sites, get_engine("ort"), batch_size=1), sensitivity, None)
    expected = choose_plan(layers, LatencyModel(**second["latency_model"]), max_ms=original_ms / 1.5)
    assert {layer["name"]: layer["rank"] for layer in document["layers"]} == expected.ranks
    assert losses == [expected.predicted_loss]
    assert document["latency"]["optimized_ms"] == second["measured_ms"]


def test_a_budget_predicted_out_of_reach_measures_the_closest_plan_and_records_it(
    tmp_path, mac_clock, model_file, monkeypatch
):
    import tests.helpers.optimize_run as clock

    # the engine saves 1.5x what the layers timed alone promise, so the fastest plan runs faster than the
    # first latency model predicts: a budget between the two is "out of reach" until that plan is measured
    monkeypatch.setattr(clock, "ENGINE_SCALE", 1.5)
    model = _model()
    original_ms = clock.model_ms(model, SIZE, 1)
    sites, _ = find_sites(model, SIZE)
    table = SensitivityTable(tmp_path / "cache" / "sensitivity.json")
    _, sensitivity = measure_sensitivity(model, sites, calibration=_calibration(), table=table)
    layers = loss_options(sites, mac_costs(model, sites, get_engine("ort"), batch_size=1), sensitivity, None)
    with pytest.raises(BudgetError) as refused:
        choose_plan(layers, LatencyModel.from_reference(original_ms, layers), max_ms=0.0)
    fastest = refused.value.best
    keep_ms = sum(layer.keep.ms for layer in layers)
    fastest_measured_ms = original_ms - 1.5 * (keep_ms - fastest.layer_ms)
    assert fastest_measured_ms < fastest.predicted_ms
    speedup = original_ms / ((fastest.predicted_ms + fastest_measured_ms) / 2)

    config = OptimizeConfig(model=str(model_file), out_dir=str(tmp_path / "out"), speedup=speedup, rounds=2)
    document = optimize_model(config)
    first, *later = document["rounds"]
    assert first["closest"] is True
    assert math.isclose(first["predicted_ms"], fastest.predicted_ms)
    assert math.isclose(first["measured_ms"], fastest_measured_ms)
    assert first["measured_ms"] <= original_ms / speedup
    # refitted on the measured plan, the model finds the budget within reach: later plans are its choices
    assert later and all(row["closest"] is False for row in later)


def test_an_accuracy_budget_alone_delivers_the_fastest_plan_within_it(tmp_path, mac_clock, model_file):
    config = OptimizeConfig(
        model=str(model_file),
        out_dir=str(tmp_path / "out"),
        dataset="mnist5k",
        max_accuracy_drop=1.0,
        rounds=0,
        epochs=0,
        validation_images=200,
        recalibration_images=64,
    )
    document = optimize_model(config)
    assert document["budget"] == {"speedup": None, "latency_ms": None, "max_accuracy_drop": 1.0}
    (only,) = document["rounds"]
    assert only["budget_ms"] is None and only["plan_budget_ms"] is None
    assert not any("was missed" in note for note in document["notes"])

    # the delivered plan is the front's fastest within 1 point: the planner's answer to "lowest latency
    # within D", and the front holds every plan no other beats on both
    within = [plan for plan in document["pareto"] if plan["predicted_loss"] <= 1.0 + 1e-9]
    fastest = min(within, key=lambda plan: plan["predicted_ms"])
    (chosen,) = [plan for plan in document["pareto"] if plan["chosen"]]
    assert chosen["ranks"] == fastest["ranks"]
    assert {layer["name"]: layer["rank"] for layer in document["layers"]} == chosen["ranks"]
    assert any(rank is not None for rank in chosen["ranks"].values())
    assert all(
        plan["predicted_loss"] > 1.0
        for plan in document["pareto"]
        if plan["predicted_ms"] < fastest["predicted_ms"]
    )


@pytest.mark.slow
def test_fine_tuning_on_a_native_bf16_cpu_runs_under_bf16_and_reports_the_written_models_accuracy(
    tmp_path, mac_clock, model_file, monkeypatch
):
    from sepconv import machine
    from sepconv.data import load_dataset
    from sepconv.train.evaluation import evaluate_model

    # The execution rule asks the one CPU probe: faking it gives the path a native-bf16 CPU takes.
    monkeypatch.setattr(machine, "cpu_features", lambda: machine.CpuFeatures(avx2=True, avx512_bf16=True))
    config = OptimizeConfig(
        model=str(model_file),
        out_dir=str(tmp_path / "out"),
        dataset="mnist5k",
        latency_ms=1e6,  # a budget every plan meets: nothing timed decides this test
        epochs=1,
        rounds=0,
        validation_images=200,
        recalibration_images=64,
    )
    document = optimize_model(config)
    run = json.loads((tmp_path / "out" / "finetune" / "result.json").read_text())
    assert run["bf16"] is True and "CPU has native bf16" in run["precision_reason"]
    written = load_model(document["files"]["model"])
    data = load_dataset("mnist5k")
    expected = 100.0 * evaluate_model(written, data.test, num_classes=data.num_classes).accuracy
    assert document["accuracy"]["fine_tuned"] == pytest.approx(expected, abs=1e-9)
    assert document["accuracy"]["images"] == len(data.test)
