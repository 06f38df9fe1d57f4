"""Learning-rate schedules against their closed forms, ``max_steps``, and data-loading processes.

The schedules are checked value by value against formulas worked out here (not against PyTorch's
schedulers, which the code uses), both as :func:`build_scheduler` builds them and as a run logs them.
"""

from __future__ import annotations

import math

import pytest
import torch
from tests.helpers.training import StepRecorder, fit_with_callbacks

from sepconv.io import load_model
from sepconv.train import TrainConfig
from sepconv.train.checkpoint import checkpoint_name, list_checkpoints, load_checkpoint
from sepconv.train.optim import build_optimizer, build_scheduler

# PyTorch computes these closed forms in float64 too, in another order (cosine: recursively, one
# factor per step): a few ulp per step, so 1e-12 relative is loose; `abs` covers values at or near 0.
RELATIVE = 1e-12


def _cosine_between(start: float, end: float, fraction: float) -> float:
    """From ``start`` (fraction 0) to ``end`` (fraction 1) along half a cosine."""
    return end + (start - end) * (1 + math.cos(math.pi * fraction)) / 2


def one_cycle_lr(step: int, total: int, peak: float) -> float:
    """lr after ``step`` scheduler steps of sepconv's one-cycle schedule over ``total`` steps.

    PyTorch's ``OneCycleLR`` (two phases, cosine annealing) with sepconv's settings: it starts at
    ``peak / div_factor`` (10), rises to ``peak`` by step ``pct_start * total - 1`` and falls to
    ``start / final_div_factor`` (1e4) by step ``total - 1`` (past it, the same curve goes on). sepconv's
    warm-up is a quarter of the steps but at least 1.5 steps; a run of one step is scheduled as two.
    """
    total = max(total, 2)
    start = peak / 10
    floor = start / 1e4
    peak_step = max(0.25, 1.5 / total) * total - 1
    if step <= peak_step:
        return _cosine_between(start, peak, step / peak_step)
    return _cosine_between(peak, floor, (step - peak_step) / (total - 1 - peak_step))


def one_cycle_beta1(step: int, total: int) -> float:
    """AdamW's beta1 under one-cycle: 0.95 falling to 0.85 at the peak lr, then back (``cycle_momentum``)."""
    peak_step = max(0.25, 1.5 / max(total, 2)) * max(total, 2) - 1
    if step <= peak_step:
        return _cosine_between(0.95, 0.85, step / peak_step)
    return _cosine_between(0.85, 0.95, (step - peak_step) / (max(total, 2) - 1 - peak_step))


def cosine_lr(step: int, total: int, peak: float) -> float:
    """Cosine annealing from ``peak`` to 0 over ``total`` steps: peak (1 + cos(pi t / T)) / 2."""
    return peak * (1 + math.cos(math.pi * step / total)) / 2


def _scheduled(schedule: str, total: int, steps: int, peak: float = 0.1) -> list[tuple[float, tuple]]:
    """(lr, betas) of group 0 before any step and after each of ``steps`` optimizer + scheduler steps."""
    config = TrainConfig(lr=peak, schedule=schedule)
    optimizer = build_optimizer(torch.nn.Linear(2, 2), config)
    scheduler = build_scheduler(optimizer, config, total)
    values = [(optimizer.param_groups[0]["lr"], optimizer.param_groups[0]["betas"])]
    for _ in range(steps):
        optimizer.step()
        scheduler.step()
        values.append((optimizer.param_groups[0]["lr"], optimizer.param_groups[0]["betas"]))
    return values


@pytest.mark.parametrize("total", [1, 4, 12])
def test_one_cycle_follows_its_closed_form_at_every_step(total):
    values = _scheduled("onecycle", total, steps=total)
    for step, (lr, betas) in enumerate(values):
        assert lr == pytest.approx(one_cycle_lr(step, total, 0.1), rel=RELATIVE), step
        assert betas[0] == pytest.approx(one_cycle_beta1(step, total), rel=RELATIVE), step
    # Worked by hand for 12 steps: the peak after step 2 (= 0.25 * 12 - 1), the floor 1e-6 after step 11.
    if total == 12:
        assert values[0][0] == pytest.approx(0.01, rel=RELATIVE)
        assert values[1][0] == pytest.approx(0.055, rel=RELATIVE)  # halfway up: (0.01 + 0.1) / 2
        assert values[2][0] == pytest.approx(0.1, rel=RELATIVE)
        assert values[11][0] == pytest.approx(1e-6, rel=RELATIVE)
    # 4 steps: the warm-up is stretched to 1.5 steps, so the peak (step 0.5) lies before step 1.
    if total == 4:
        assert values[1][0] == pytest.approx(_cosine_between(0.1, 1e-6, 0.5 / 2.5), rel=RELATIVE)


@pytest.mark.parametrize("total", [1, 12])
def test_cosine_follows_its_closed_form_at_every_step(total):
    values = _scheduled("cosine", total, steps=total)
    for step, (lr, _) in enumerate(values):
        assert lr == pytest.approx(cosine_lr(step, total, 0.1), rel=RELATIVE, abs=1e-15), step
    if total == 12:
        assert values[4][0] == pytest.approx(0.075, rel=RELATIVE)  # cos(pi / 3) = 1/2
        assert values[6][0] == pytest.approx(0.05, rel=RELATIVE)
        assert values[12][0] == pytest.approx(0.0, abs=1e-15)


def test_a_run_logs_the_one_cycle_lr_of_its_total_steps(recorded_tiny_run):
    result, _ = recorded_tiny_run  # tiny_config: 2 epochs x 6 steps, lr 1e-2, one-cycle
    assert [row["step"] for row in result.history] == [6, 12]
    for row in result.history:
        assert row["lr"] == pytest.approx(one_cycle_lr(row["step"], 12, 1e-2), rel=RELATIVE)


def test_max_steps_stops_at_that_step_and_schedules_over_it(tmp_path, tiny_data, tiny_config):
    # 9 of the 18 steps of 3 epochs: a cosine over 9 steps, not 18, and a stop in the middle of epoch 2.
    config = tiny_config(
        tmp_path,
        epochs=3,
        max_steps=9,
        schedule="cosine",
        checkpoint_every_steps=4,
        checkpoint_every_epochs=0,  # only at the end of the run
        keep_checkpoints=10,
    )
    recorder = StepRecorder()
    result = fit_with_callbacks(config, [recorder], data=tiny_data)
    assert [record.step for record in recorder.steps] == list(range(1, 10))
    assert [row["step"] for row in result.history] == [6, 9]
    assert [row["epoch"] for row in result.history] == [1, 2]
    assert result.history[0]["lr"] == pytest.approx(cosine_lr(6, 9, 1e-2), rel=RELATIVE)  # 1e-2 / 4
    assert result.history[1]["lr"] == pytest.approx(0.0, abs=1e-15)
    # The run's end is checkpointed though it is no epoch end nor a multiple of 4; it holds the final model.
    run_id = result.run_id
    assert [path.name for path in list_checkpoints(tmp_path / "checkpoints")] == [
        checkpoint_name(step, run_id) for step in (4, 8, 9)
    ]
    assert result.last_checkpoint == tmp_path / "checkpoints" / checkpoint_name(9, run_id)
    last = load_checkpoint(result.last_checkpoint)
    assert last["global_step"] == 9
    final = load_model(tmp_path / "model.safetensors").state_dict()
    for key, value in final.items():
        assert torch.equal(last["state_dict"]["model." + key], value), key


def test_data_loading_processes_give_the_same_batches_and_weights(
    tmp_path, tiny_data, tiny_config, recorded_tiny_run
):
    reference, reference_steps = recorded_tiny_run  # the same run with num_workers=0
    recorder = StepRecorder()
    result = fit_with_callbacks(tiny_config(tmp_path, num_workers=2), [recorder], data=tiny_data)
    assert [record.step for record in recorder.steps] == [record.step for record in reference_steps]
    for got, expected in zip(recorder.steps, reference_steps, strict=True):
        assert torch.equal(got.images, expected.images) and torch.equal(got.labels, expected.labels), got.step
    for key, value in reference.model.state_dict().items():
        assert torch.equal(result.model.state_dict()[key], value), key
    timings = ("epoch_seconds", "step_seconds")
    assert [{k: v for k, v in row.items() if k not in timings} for row in result.history] == [
        {k: v for k, v in row.items() if k not in timings} for row in reference.history
    ]
