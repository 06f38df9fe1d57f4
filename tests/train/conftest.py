"""Tiny data and model settings shared by the training tests (seconds per run on 2 cores)."""

from __future__ import annotations

import pytest
from torch.utils.data import Subset

from sepconv.data import DataSplits, load_dataset
from sepconv.train import TrainConfig

TINY_WIDTHS = [4, 8, 8, 16]


@pytest.fixture(scope="session")
def tiny_data() -> DataSplits:
    """The synthetic shapes, cut to 192 train / 48 val / 60 test images (3 x 32 x 32, 6 classes).

    The splits are sorted by class, so the images are taken evenly spaced: every class is in every split.
    """
    full = load_dataset("synthetic", seed=0)

    def spread(split, count):
        return Subset(split, [index * len(split) // count for index in range(count)])

    return DataSplits(
        train=spread(full.train, 192),
        val=spread(full.val, 48),
        test=spread(full.test, 60),
        num_classes=full.num_classes,
        in_channels=full.in_channels,
        image_size=full.image_size,
        class_names=full.class_names,
        name="synthetic-tiny",
    )


def _tiny_config(out_dir, **overrides) -> TrainConfig:
    """A run of a 4-to-16-channel separable CNN: 2 epochs of 6 steps, checkpoint every 4 steps."""
    settings = dict(
        model="separable_cnn",
        model_kwargs={"widths": TINY_WIDTHS},
        dataset="synthetic",
        epochs=2,
        batch_size=32,
        lr=1e-2,
        out_dir=str(out_dir),
        checkpoint_every_steps=4,
        checkpoint_every_epochs=1,
        keep_checkpoints=2,
        progress_bar=False,
        tensorboard=False,
        channels_last="off",
        bf16="off",
    )
    settings.update(overrides)
    return TrainConfig(**settings)


@pytest.fixture(scope="session")
def tiny_config():
    """The factory of tiny run configurations: ``tiny_config(out_dir, **overrides)``."""
    return _tiny_config


@pytest.fixture(scope="session")
def recorded_tiny_run(tmp_path_factory, tiny_data, tiny_config):
    """One uninterrupted ``tiny_config`` run (12 steps, one data-loading process) and what each step saw:
    ``(result, steps)``, ``steps`` being :class:`tests.helpers.training.StepRecord` per optimizer step."""
    from tests.helpers.training import StepRecorder, fit_with_callbacks

    recorder = StepRecorder()
    result = fit_with_callbacks(
        tiny_config(tmp_path_factory.mktemp("recorded") / "run"), [recorder], data=tiny_data
    )
    return result, recorder.steps
