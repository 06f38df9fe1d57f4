"""Unit tests of the training pieces: parameter groups, sampler sharding and resumption, config checks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from sepconv.models import create_model
from sepconv.train import TrainConfig
from sepconv.train.config import result_differences
from sepconv.train.data import ShardedEpochSampler
from sepconv.train.evaluation import evaluate_model
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


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_sharded_sampler_covers_every_index_once_per_epoch(world_size):
    shards = [
        list(
            ShardedEpochSampler(
                range(10), batch_size=2, seed=3, shuffle=True, rank=rank, world_size=world_size
            )
        )
        for rank in range(world_size)
    ]
    assert len({len(shard) for shard in shards}) == 1
    assert set().union(*map(set, shards)) == set(range(10))
    assert sum(map(len, shards)) == -(-10 // world_size) * world_size  # padded by repeating the start


def test_sampler_order_depends_on_seed_and_epoch_only_and_resumes_mid_epoch():
    sampler = ShardedEpochSampler(range(50), batch_size=8, seed=1, shuffle=True)
    sampler.set_epoch(2)
    full = list(sampler)
    assert list(sampler) == full  # a pure function of (seed, epoch)
    sampler.set_epoch(3)
    assert list(sampler) != full
    sampler.set_epoch(2)
    sampler.start_batch = 3
    assert list(sampler) == full[24:]
    assert list(sampler) == full  # the skip applies to one iteration only


def test_config_rejects_bad_values_naming_the_field():
    with pytest.raises(ValueError, match="optimizer must be one of adamw, sgd"):
        TrainConfig(optimizer="adam").validate()
    with pytest.raises(ValueError, match=r"batch_size .* divisible"):
        TrainConfig(batch_size=33, devices=2).validate()
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):
        TrainConfig(lr=0).validate()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"lr": float("nan")}, "lr must be a finite number > 0, got nan"),
        ({"lr": float("inf")}, "lr must be a finite number > 0, got inf"),
        ({"weight_decay": -1e-3}, "weight_decay must be a finite number >= 0"),
        ({"label_smoothing": 1.0}, r"label_smoothing must be a finite number in \[0, 1\)"),
        ({"momentum": float("nan")}, "momentum must be"),
        ({"seed": 2**32}, r"seed must be an integer in \[0, 4,294,967,295\]"),
        ({"epochs": True}, "epochs must be a positive integer, got True"),
        ({"checkpoint_every_epochs": -1}, "checkpoint_every_epochs must be a non-negative integer, got -1"),
        ({"model_kwargs": {"width_mult": float("inf")}}, r"model_kwargs\['width_mult'\] must hold finite"),
        ({"model_kwargs": {"widths": [4, float("nan")]}}, r"model_kwargs\['widths'\] must hold finite"),
        ({"model": ""}, "model must be a non-empty name"),
    ],
)
def test_config_refuses_non_finite_and_out_of_range_numbers(overrides, message):
    with pytest.raises(ValueError, match=message) as refused:
        TrainConfig(**overrides).validate()
    # The field is named apart from the message, for the command line to name its flag.
    assert refused.value.param == next(iter(overrides))


def test_config_stores_numpy_numbers_as_the_plain_numbers_they_stand_for():
    config = TrainConfig(epochs=np.int64(3), seed=np.uint32(7), lr=np.float32(0.5), weight_decay=0).validate()
    assert (config.epochs, config.seed, config.lr, config.weight_decay) == (3, 7, 0.5, 0)
    assert [type(value) for value in (config.epochs, config.seed, config.lr, config.weight_decay)] == [
        int,
        int,
        float,
        int,  # a Python int stays as given
    ]
    json.dumps(config.to_dict())


def test_resume_names_every_setting_that_changes_the_result():
    saved = TrainConfig(seed=1, lr=0.1, model_kwargs={"widths": [4, 8]}).to_dict()
    now = TrainConfig(seed=2, lr=0.1, model_kwargs={"widths": [4, 16]}, out_dir="elsewhere", num_workers=3)
    # out_dir and num_workers do not change what is computed; seed and the model's arguments do.
    assert result_differences(saved, now) == [
        "model_kwargs {'widths': [4, 8]} -> {'widths': [4, 16]}",
        "seed 1 -> 2",
    ]


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


def test_confusion_matrix_counts_and_accuracy_agree():
    torch.manual_seed(0)
    images = torch.randn(40, 5)
    labels = torch.randint(0, 5, (40,))
    dataset = torch.utils.data.TensorDataset(images, labels)
    evaluation = evaluate_model(nn.Identity(), dataset, num_classes=5, batch_size=7)
    predicted = images.argmax(1)
    assert evaluation.num_samples == 40
    # The reference is a float32 mean of 40 zeros and ones (k/40 rounded to 6e-8 relative); approx's
    # default rel 1e-6 covers that and is far below one sample (1/40).
    assert evaluation.accuracy == pytest.approx(float((predicted == labels).float().mean()))
    for true in range(5):
        for guess in range(5):
            assert int(evaluation.confusion[true, guess]) == int(
                ((labels == true) & (predicted == guess)).sum()
            )
