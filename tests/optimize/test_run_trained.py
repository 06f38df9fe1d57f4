"""``sepconv optimize`` for real on a small trained model: real timings, real caches, real fine-tuning.

Nothing here depends on how fast anything ran: the timings only decide *which* plan the planner
chooses, and the tests check that the delivered plan is the planner's choice from the stored tables,
that the files agree with each other and with an independent evaluation, and what the caches hold.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sepconv import load_model
from sepconv.data import load_dataset
from sepconv.deploy import OnnxModel
from sepconv.deploy.engines import get_engine
from sepconv.optimize.costs import CostTable, measure_costs
from sepconv.optimize.planner import BudgetError, LatencyModel, choose_plan
from sepconv.optimize.run import OptimizeConfig, load_inputs, optimize_model
from sepconv.optimize.sensitivity import SensitivityTable, loss_options, measure_sensitivity
from sepconv.optimize.sites import find_sites
from sepconv.timing import TimingPlan
from sepconv.train.evaluation import evaluate_model

# Short timings: the plan depends on them, the assertions do not. A batch of 16 lets the layers' work,
# not the calls' overhead, decide, so that a 5% speedup is always within reach of this small model.
SHORT = TimingPlan(warmup_calls=1, min_rounds=3, min_run_seconds=0, calls_per_block=3, settle_seconds=0)
BATCH = 16
WIDTHS = [8, 16, 16, 32]
SEED = 3  # a split seed other than 0: the run's seed must be followed


# Its tests run on one worker (pytest-xdist's --dist loadgroup), so the module fixture
# `trained` is computed once per run, not once on each worker.
pytestmark = pytest.mark.xdist_group("optimize-run_trained")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small standard_cnn trained one epoch on mnist5k with the demo recipe (its run folder)."""
    from sepconv.demo import DEMO_BATCH_SIZE, DEMO_LR, demo_config
    from sepconv.train import fit

    folder = tmp_path_factory.mktemp("trained")
    config = demo_config(
        "standard_cnn",
        folder,
        dataset="mnist5k",
        epochs=1,
        batch_size=DEMO_BATCH_SIZE,
        lr=DEMO_LR,
        seed=SEED,
        progress=False,
    )
    config.model_kwargs = {"widths": WIDTHS}
    fit(config)
    return folder / "standard_cnn"


def _config(trained, tmp_path, out: str, **changes) -> OptimizeConfig:
    settings = {
        "model": str(trained),
        "out_dir": str(tmp_path / out),
        "speedup": 1.05,
        "batch_size": BATCH,
        "epochs": 1,
        "timing_plan": SHORT,
        "cost_table": str(tmp_path / "tables" / "costs.json"),
        "sensitivity_table": str(tmp_path / "tables" / "sensitivity.json"),
        "validation_images": 200,
        "recalibration_images": 128,
        **changes,
    }
    return OptimizeConfig(**settings)


@pytest.mark.slow
def test_a_trained_model_is_optimized_from_its_run_and_every_figure_checks_out(trained, tmp_path):
    config = _config(trained, tmp_path, "out")
    document = optimize_model(config)

    # the run's data set and split seed were followed
    assert document["dataset"] == "mnist5k" and document["loss_unit"] == "accuracy points"
    data = load_dataset("mnist5k", seed=SEED)

    # the plan is the planner's choice from the stored tables, on the latency model of its round
    inputs = load_inputs(config)
    sites, _ = find_sites(inputs.model, inputs.input_size)
    engine = get_engine("ort")
    costs = measure_costs(
        inputs.model,
        sites,
        engine,
        batch_size=BATCH,
        threads=document["engine"]["threads"],
        table=CostTable(config.cost_table),
    )
    assert all(cost.cached for ranks in costs.values() for cost in ranks.values())
    validation = data.val
    images = torch.stack([validation[index][0] for index in range(200)])
    labels = torch.tensor([int(validation[index][1]) for index in range(200)])
    base, sensitivity = measure_sensitivity(
        inputs.model,
        sites,
        calibration=inputs.calibration,
        recalibration=inputs.recalibration,
        validation=(images, labels),
        table=SensitivityTable(config.sensitivity_table),
        dataset="mnist5k",
        split_seed=SEED,
    )
    assert all(entry.cached for ranks in sensitivity.values() for entry in ranks.values())
    chosen_round = next(
        row for row in document["rounds"] if row["measured_ms"] == document["latency"]["optimized_ms"]
    )
    assert document["latency"]["budget_ms"] == chosen_round["budget_ms"]
    # Where the latency model of the round found the budget out of reach, the round measured the
    # planner's closest plan instead: which case happened depends on the timings, so both are followed.
    try:
        expected = choose_plan(
            loss_options(sites, costs, sensitivity, base),
            LatencyModel(**chosen_round["latency_model"]),
            max_ms=chosen_round["plan_budget_ms"],
        )
    except BudgetError as error:
        assert chosen_round["closest"] is True
        expected = error.best
    else:
        assert chosen_round["closest"] is False
    assert {layer["name"]: layer["rank"] for layer in document["layers"]} == expected.ranks
    for layer in document["layers"]:
        rank = layer["rank"]
        assert layer["ms_before"] == costs[layer["name"]][None].ms
        assert layer["ms_after"] == costs[layer["name"]][rank].ms
        if rank is not None:
            assert layer["output_error"] == sensitivity[layer["name"]][rank].output_error
            assert layer["accuracy_drop"] == pytest.approx(base - sensitivity[layer["name"]][rank].accuracy)

    # the written model reloads, and the deployable file computes what it computes
    written = load_model(document["files"]["model"]).eval()
    x = torch.stack([data.test[index][0] for index in range(8)])
    np.testing.assert_allclose(
        OnnxModel(document["files"]["deployable"])(x.numpy()),
        written(x).detach().numpy(),
        atol=1e-4,
        rtol=1e-3,
    )

    # accuracies equal an independent evaluation of the files on the run's test split
    def accuracy(path) -> float:
        model = load_model(path)
        return 100.0 * evaluate_model(model, data.test, num_classes=data.num_classes).accuracy

    result = document["accuracy"]
    assert result["images"] == len(data.test)
    assert result["original"] == pytest.approx(accuracy(trained / "model.safetensors"))
    assert result["converted"] == pytest.approx(accuracy(tmp_path / "out" / "converted.safetensors"))
    assert result["fine_tuned"] == pytest.approx(accuracy(document["files"]["model"]))
    assert result["drop"] == pytest.approx(result["original"] - result["fine_tuned"])
    assert json.loads((tmp_path / "out" / "finetune" / "config.json").read_text())["seed"] == SEED

    # a second run on the same tables measures nothing
    again = optimize_model(_config(trained, tmp_path, "again", epochs=0))
    assert again["cached"]["costs"]["measured"] == 0 and again["cached"]["sensitivity"]["measured"] == 0
    assert again["cached"]["costs"]["reused"] == sum(1 + len(site.ranks) for site in sites)
    assert any("not fine-tuned" in note for note in again["notes"])


@pytest.mark.slow
def test_an_interrupted_run_leaves_usable_tables_and_no_folder_and_a_rerun_resumes(trained, tmp_path):
    config = _config(trained, tmp_path, "out", epochs=0)
    inputs = load_inputs(config)
    sites, _ = find_sites(inputs.model, inputs.input_size)

    def stop_after_two_sites(stage: str, description: str, completed: int, total: int) -> None:
        if stage == "costs" and completed == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        optimize_model(config, progress=stop_after_two_sites)
    assert not (tmp_path / "out").exists()
    saved = {_key(site, rank) for site in sites[:2] for rank in (None, *site.ranks)}
    assert len(CostTable(config.cost_table)) == len(saved)

    # the rerun takes the first two sites from the table, and a later layer of the same geometry and
    # input too (the same measurement); it measures the rest once
    reused = measured = 0
    for site in sites:
        for rank in (None, *site.ranks):
            if _key(site, rank) in saved:
                reused += 1
            else:
                measured += 1
                saved.add(_key(site, rank))
    document = optimize_model(config)
    assert document["cached"]["costs"] == {"measured": measured, "reused": reused}
    assert reused >= sum(1 + len(site.ranks) for site in sites[:2])


def _key(site, rank) -> tuple:
    return json.dumps(site.geometry, sort_keys=True), site.input_shape, rank
