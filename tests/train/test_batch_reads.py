"""Reading a whole batch at once (``__getitems__``) gives what reading its samples one by one gives.

The ``DataLoader`` calls a data set's ``__getitems__`` with a batch's indices when it has one. Without
augmentation :class:`~sepconv.data.NormalizedImages` reads the batch as one tensor operation, and
:class:`~sepconv.train.data.EpochSeededDataset` skips its per-sample seeding; with augmentation both
read sample by sample as before. Either way the loader's batches must equal, bit for bit, those built
from ``dataset[index]`` (the reference: the code path every other test covers).
"""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import default_collate

from sepconv.data import NormalizedImages
from sepconv.train.data import EpochSeededDataset, make_loader


def _images(augment=None) -> NormalizedImages:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (40, 3, 6, 5), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (40,), generator=generator)
    return NormalizedImages(images, labels, mean=(0.1, 0.5, 0.9), std=(0.3, 0.2, 0.7), augment=augment)


def _flip_at_random(image: torch.Tensor) -> torch.Tensor:
    return image.flip(-1) if torch.rand(()) < 0.5 else image


def _same_samples(got: list, expected: list) -> None:
    assert len(got) == len(expected)
    for (image, label), (expected_image, expected_label) in zip(got, expected):
        assert torch.equal(image, expected_image) and label == expected_label
        assert isinstance(label, int)


def test_a_batch_read_of_normalized_images_is_the_samples_read_one_by_one():
    data = _images()
    indices = [7, 0, 39, 7, 12]
    assert not data.draws_random
    _same_samples(data.__getitems__(indices), [data[index] for index in indices])
    # by hand, for one pixel: (value / 255 - mean) / std of its channel
    image, label = data.__getitems__([3])[0]
    assert image[2, 4, 1] == (data.images[3, 2, 4, 1].float() / 255 - 0.9) / 0.7
    assert label == int(data.labels[3])


def test_augmented_data_is_read_one_sample_at_a_time_under_each_samples_seed():
    data = _images(augment=_flip_at_random)
    assert data.draws_random
    seeded = EpochSeededDataset(data, seed=5)
    keys = [(2, index) for index in range(12)]
    _same_samples(seeded.__getitems__(keys), [seeded[key] for key in keys])
    # the flips differ between samples, so the seeding (not one draw for the batch) decided them
    flipped = [not torch.equal(seeded[key][0], data.__getitems__([key[1]])[0][0]) for key in keys]
    assert any(flipped) and not all(flipped)


@pytest.mark.parametrize("augment", [None, _flip_at_random])
def test_the_loaders_batches_equal_those_built_from_single_reads(augment):
    data = _images(augment)
    loader = make_loader(data, batch_size=8, seed=3, shuffle=True)
    loader.sampler.set_epoch(4)
    seeded = EpochSeededDataset(data, seed=3)
    keys = list(loader.sampler)
    batches = list(loader)
    assert len(batches) == 5
    for number, (images, labels) in enumerate(batches):
        expected_images, expected_labels = default_collate(
            [seeded[key] for key in keys[number * 8 : (number + 1) * 8]]
        )
        assert torch.equal(images, expected_images) and torch.equal(labels, expected_labels)
