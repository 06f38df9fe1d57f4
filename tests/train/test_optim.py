"""The optimizer's parameter groups (no weight decay on biases and norms) and the one-cycle schedule."""

from __future__ import annotations

import pytest
from torch import nn

from sepconv.models import create_model
from sepconv.train import TrainConfig
from sepconv.train.optim import build_optimizer, build_scheduler, parameter_groups


def test_weight_decay_skips_biases_and_norm_parameters():
    model = create_model("separable_cnn")
    decayed, not_decayed = parameter_groups(model, 0.05)
    norm_and_bias = {id(p) for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters()}
    norm_and_bias |= {id(m.bias) for m in model.modules() if isinstance(m, nn.Linear)}
    assert {id(p) for p in not_decayed["params"]} == norm_and_bias
    assert all(p.ndim > 1 for p in decayed["params"])
    assert len(decayed["params"]) + len(not_decayed["params"]) == len(list(model.parameters()))
    optimizer = build_optimizer(model, TrainConfig(optimizer="sgd", weight_decay=0.1))
    assert [group["weight_decay"] for group in optimizer.param_groups] == [0.1, 0.0]


@pytest.mark.parametrize("total_steps", [1, 2, 3, 4, 5, 6, 7, 40])
def test_one_cycle_schedule_runs_any_number_of_steps_and_peaks_at_lr(total_steps):
    # OneCycleLR divides by the length of its warm-up; a one-step warm-up (4 steps x 0.25) used to be 1/0.
    model = nn.Linear(2, 2)
    config = TrainConfig(lr=0.1)
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config, total_steps)
    rates = []
    for _ in range(total_steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    # The schedule is float64 arithmetic (a cosine, a few products): off by a few ulps (~1e-16), so
    # approx's default rel 1e-6 is ample and the peak may exceed 0.1 by rounding only (1e-12).
    assert rates[0] == pytest.approx(0.1 / 10)  # div_factor 10: starts at a tenth of the peak
    assert max(rates) <= 0.1 * (1 + 1e-12)
    if total_steps >= 40:  # long enough to reach the peak on a step: warm-up ends at step 0.25 x 40 - 1
        assert max(rates) == pytest.approx(0.1)
