"""With augmentation on, a run split mid-epoch and read by loader workers is the uninterrupted run.

Each sample's augmentation is drawn from a generator seeded by (seed, epoch, index), so neither the
process that reads it (the main process or one of two workers) nor a resume changes the augmented
images. The reference is an uninterrupted run with no workers; "equal" is ``torch.equal``.
"""

from __future__ import annotations

import pytest
import torch
from tests.helpers.training import (
    StepRecorder,
    StopAfterStep,
    StopRun,
    assert_steps_match,
    documented_batch,
    fit_with_callbacks,
)
from torch.utils.data import Subset

from sepconv.data import DataSplits, load_dataset


@pytest.fixture(scope="module")
def augmented_data(tiny_data) -> DataSplits:
    """tiny_data's images (the same indices of the same splits), with the light augmentation on."""
    full = load_dataset("synthetic", seed=0, augment=True)
    return DataSplits(
        train=Subset(full.train, tiny_data.train.indices),
        val=Subset(full.val, tiny_data.val.indices),
        test=Subset(full.test, tiny_data.test.indices),
        num_classes=full.num_classes,
        in_channels=full.in_channels,
        image_size=full.image_size,
        class_names=full.class_names,
        name="synthetic-tiny-augmented",
    )


@pytest.fixture(scope="module")
def augmented_reference(tmp_path_factory, augmented_data, tiny_config):
    recorder = StepRecorder()
    out = tmp_path_factory.mktemp("augmented") / "run"
    result = fit_with_callbacks(tiny_config(out), [recorder], data=augmented_data)
    return result, recorder.steps


def test_augmentation_changes_the_images_and_differs_between_epochs(augmented_reference, tiny_data):
    _, steps = augmented_reference
    plain, labels = documented_batch(tiny_data, 1)
    assert torch.equal(steps[0].labels, labels)  # the same samples in the same order...
    assert not torch.equal(steps[0].images, plain)  # ...augmented
    # The same sample in epoch 0 and epoch 1 (step 1 and step 7 hold the same sample at some place):
    first_epoch = {int(i): image for i, image in zip(_indices(tiny_data, 1), steps[0].images, strict=True)}
    second = [(int(i), image) for i, image in zip(_indices(tiny_data, 7), steps[6].images, strict=True)]
    shared = [(first_epoch[i], image) for i, image in second if i in first_epoch]
    assert shared, "steps 1 and 7 share no sample"
    assert all(not torch.equal(a, b) for a, b in shared)


def _indices(data, step: int, seed: int = 0, batch_size: int = 32, steps_per_epoch: int = 6) -> list[int]:
    epoch, index = divmod(step - 1, steps_per_epoch)
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(seed + epoch)).tolist()
    return order[index * batch_size : (index + 1) * batch_size]


@pytest.mark.slow  # four training runs with two loader workers each: about 25 s
@pytest.mark.parametrize("split", [4, 8], ids=["mid-epoch-1", "mid-epoch-2"])
def test_an_augmented_run_split_mid_epoch_with_two_workers_is_the_uninterrupted_run(
    tmp_path, augmented_data, tiny_config, augmented_reference, split
):
    reference, reference_steps = augmented_reference
    config = tiny_config(tmp_path, num_workers=2)
    first_half = StepRecorder()
    with pytest.raises(StopRun):
        fit_with_callbacks(config, [first_half, StopAfterStep(split)], data=augmented_data)
    assert_steps_match(first_half.steps, reference_steps[:split])
    second_half = StepRecorder()
    result = fit_with_callbacks(config, [second_half], data=augmented_data, resume=tmp_path)
    assert_steps_match(second_half.steps, reference_steps[split:])
    for key, value in reference.model.state_dict().items():
        assert torch.equal(result.model.state_dict()[key], value), key
