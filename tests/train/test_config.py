"""TrainConfig's checks (each bad value refused naming its field) and which settings change a run's result."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sepconv.train import TrainConfig
from sepconv.train.config import result_differences


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
