"""End-to-end runs of ``sepconv.train.fit`` on tiny data: files, metrics, checkpoints, failures."""

from __future__ import annotations

import csv
import math

import pytest
import torch

from sepconv.io import load_model
from sepconv.train import fit
from sepconv.train.checkpoint import checkpoint_files, list_checkpoints, load_checkpoint
from sepconv.train.module import NonFiniteLossError


def _read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_fit_writes_one_csv_row_per_epoch_with_the_logged_values(tmp_path, tiny_data, tiny_config):
    result = fit(tiny_config(tmp_path, epochs=3), data=tiny_data)
    rows = _read_csv(tmp_path / "metrics.csv")
    assert [int(row["epoch"]) for row in rows] == [1, 2, 3]
    assert [int(row["step"]) for row in rows] == [6, 12, 18]  # 192 images / 32 per step
    # csv writes str(float), the shortest text that reads back to the same float64: exact; 1e-12 is
    # only a float64-level margin.
    for row, logged in zip(rows, result.history, strict=True):
        for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr"):
            assert float(row[key]) == pytest.approx(logged[key], rel=1e-12)
            assert math.isfinite(float(row[key]))
    # A seeded run on 6 easy classes: the loss falls from about chance (ln 6 = 1.79) by ~0.6 in 3
    # epochs, far more than any rounding, so a strict decrease is a safe check that it learns.
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert 0.0 <= result.test_accuracy <= 1.0
    # The final model file rebuilds the trained network exactly.
    reloaded = load_model(result.model_path)
    for key, value in result.model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[key], value)


def test_checkpoints_every_n_steps_keep_the_last_k_and_hold_full_state(tmp_path, tiny_data, tiny_config):
    result = fit(tiny_config(tmp_path, checkpoint_every_steps=4, keep_checkpoints=2), data=tiny_data)
    kept = [path.name for path in list_checkpoints(tmp_path / "checkpoints")]
    run = result.run_id
    # steps 4, 6 pruned; 12 = end of epoch 2
    assert kept == [f"step-00000008-{run}.state", f"step-00000012-{run}.state"]
    assert result.last_checkpoint.name == f"step-00000012-{run}.state"
    state = load_checkpoint(result.last_checkpoint)
    assert state["global_step"] == 12
    assert state["optimizer_states"][0]["state"]  # AdamW moments are there
    assert "rng" in state["sepconv"]
    for key, value in result.model.state_dict().items():
        assert torch.equal(state["state_dict"]["model." + key], value)


def test_resume_falls_back_past_a_corrupt_newest_checkpoint(tmp_path, tiny_data, tiny_config):
    config = tiny_config(tmp_path, epochs=2, checkpoint_every_steps=2, keep_checkpoints=3)
    run = fit(config, data=tiny_data).run_id
    weights, state = checkpoint_files(list_checkpoints(tmp_path / "checkpoints")[-1])
    assert state.name == f"step-00000012-{run}.state"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated, as by a crash or a full disk
    warnings: list[str] = []
    result = fit(config, data=tiny_data, resume=tmp_path, warn=warnings.append)
    assert result.resumed_from.name == f"step-00000010-{run}.state"
    assert any(f"step-00000012-{run}.state" in message for message in warnings)
    assert [row["epoch"] for row in result.history] == [1, 2]  # epoch 1 from the checkpoint, 2 finished now
    assert result.history[-1]["step"] == 12


def test_resume_refuses_changed_recipe(tmp_path, tiny_data, tiny_config):
    fit(tiny_config(tmp_path, epochs=1), data=tiny_data)
    with pytest.raises(ValueError, match="epochs 1 -> 3"):
        fit(tiny_config(tmp_path, epochs=3), data=tiny_data, resume=tmp_path)


def test_non_finite_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(
    tmp_path, tiny_data, tiny_config
):
    config = tiny_config(
        tmp_path, epochs=2, checkpoint_every_steps=2, lr=1e30, optimizer="sgd", schedule="constant"
    )
    with pytest.raises(NonFiniteLossError, match="loss became"):
        fit(config, data=tiny_data)
    checkpoints = list_checkpoints(tmp_path / "checkpoints")
    for path in checkpoints:  # every checkpoint written holds finite weights and loads cleanly
        state = load_checkpoint(path)
        assert all(
            torch.isfinite(value).all() for value in state["state_dict"].values() if value.is_floating_point()
        )


def test_unreachable_visdom_gives_one_warning_and_a_complete_csv(tmp_path, tiny_data, tiny_config):
    import socket

    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    warnings: list[str] = []
    result = fit(
        tiny_config(tmp_path, epochs=3, visdom=f"http://127.0.0.1:{port}"),
        data=tiny_data,
        warn=warnings.append,
    )
    import logging

    assert logging.getLogger("visdom").filters == []  # its quieting filter is gone with the run
    visdom_warnings = [message for message in warnings if "visdom" in message]
    assert len(visdom_warnings) == 1, warnings
    rows = _read_csv(tmp_path / "metrics.csv")
    assert len(rows) == 3 and all(row["val_loss"] for row in rows)
    assert len(result.history) == 3


def test_early_stopping_stops_before_max_epochs(tmp_path, tiny_data, tiny_config):
    # With lr ~0 the weights stay put; only BatchNorm's running statistics move (geometrically), so the
    # validation loss soon stops improving. Patience 1 must stop at the first epoch without a new best.
    config = tiny_config(tmp_path, epochs=6, lr=1e-12, schedule="constant", early_stopping_patience=1)
    result = fit(config, data=tiny_data)
    losses = [row["val_loss"] for row in result.history]
    first_without_gain = next(epoch for epoch in range(1, 6) if losses[epoch] >= min(losses[:epoch]))
    assert len(losses) == first_without_gain + 1 < 6
    assert result.stopped_early


def test_fit_leaves_warning_filters_loggers_and_matplotlib_as_they_were(tmp_path, tiny_data, tiny_config):
    import logging
    import warnings as warnings_module

    import matplotlib

    loggers = ("lightning.pytorch", "lightning.fabric", "lightning")
    levels = [logging.getLogger(name).level for name in loggers]
    filters = list(warnings_module.filters)
    backend = matplotlib.get_backend()
    fit(tiny_config(tmp_path, epochs=1), data=tiny_data)
    assert [logging.getLogger(name).level for name in loggers] == levels
    assert list(warnings_module.filters) == filters
    assert matplotlib.get_backend() == backend
    for name in loggers:
        assert all(not handler.filters for handler in logging.getLogger(name).handlers)


def test_a_single_class_data_set_is_refused(tmp_path, tiny_data, tiny_config):
    import dataclasses

    single = dataclasses.replace(tiny_data, num_classes=1, class_names=["only"])
    with pytest.raises(ValueError, match="has 1 class"):
        fit(tiny_config(tmp_path), data=single)
    assert not (tmp_path / "run.json").exists()  # refused before the folder was claimed


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without a GPU")
def test_a_gpu_run_without_a_gpu_is_refused_before_anything_is_written(tmp_path, tiny_data, tiny_config):
    with pytest.raises(ValueError, match="accelerator 'gpu': no CUDA GPU is visible"):
        fit(tiny_config(tmp_path / "run", accelerator="gpu"), data=tiny_data)
    assert not (tmp_path / "run").exists()


def test_tiny_data_holds_every_class_in_every_split(tiny_data):
    for split in (tiny_data.train, tiny_data.val, tiny_data.test):
        assert {int(split[index][1]) for index in range(len(split))} == set(range(6))
