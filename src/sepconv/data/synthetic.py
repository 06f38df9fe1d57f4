"""``synthetic``: coloured shapes drawn on noise, generated in milliseconds, for tests and smoke runs.

Six classes (circle, square, triangle, cross, ring, bar), each drawn in a random colour, size and
position onto a noisy dark background, as 3 x 32 x 32 RGB images. Everything comes from one
``numpy`` generator seeded by ``seed``, so a seed always gives the same images and the same split.
The classes are easy but not trivial: a small CNN learns them in a few epochs.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch

from sepconv.checks import check_int, check_positive
from sepconv.data.augment import light_augmentation
from sepconv.data.splits import DataSplits, NormalizedImages, check_fractions, stratified_split

__all__ = ["SHAPE_NAMES", "load_synthetic", "make_shapes"]

#: The classes of the synthetic data set: one shape each, drawn at random sizes and places.
SHAPE_NAMES = ("circle", "square", "triangle", "cross", "ring", "bar")
SYNTHETIC_MEAN = (0.5, 0.5, 0.5)
SYNTHETIC_STD = (0.25, 0.25, 0.25)


def _shape_mask(
    shape: str, rows: npt.NDArray[np.float64], cols: npt.NDArray[np.float64], radius: float
) -> npt.NDArray[np.bool_]:
    """Boolean mask of ``shape`` centred at (0, 0) in the coordinate grids ``rows``/``cols``."""
    distance = np.hypot(rows, cols)
    if shape == "circle":
        return distance <= radius
    if shape == "square":
        return (np.abs(rows) <= radius * 0.8) & (np.abs(cols) <= radius * 0.8)
    if shape == "triangle":  # apex at the top (row -radius), widening down to the base (row 0.8 radius)
        return (rows >= -radius) & (rows <= radius * 0.8) & (np.abs(cols) <= (rows + radius) * 0.55)
    if shape == "cross":
        arm = radius * 0.3
        return ((np.abs(rows) <= arm) & (np.abs(cols) <= radius)) | (
            (np.abs(cols) <= arm) & (np.abs(rows) <= radius)
        )
    if shape == "ring":
        return (distance <= radius) & (distance >= radius * 0.55)
    if shape == "bar":
        return (np.abs(rows) <= radius * 0.3) & (np.abs(cols) <= radius)
    raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPE_NAMES)}")


def make_shapes(
    num_per_class: int, *, image_size: int = 32, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``num_per_class`` images of each shape: ``uint8`` images N x 3 x S x S and labels (N,).

    >>> images, labels = make_shapes(2, image_size=16)
    >>> tuple(images.shape), labels.tolist()
    ((12, 3, 16, 16), [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5])
    """
    num_per_class = check_positive("num_per_class", num_per_class)
    image_size = check_int("image_size", image_size, minimum=8)
    rng = np.random.default_rng(seed)
    grid = np.arange(image_size, dtype=np.float64)
    images = np.empty((len(SHAPE_NAMES) * num_per_class, image_size, image_size, 3), dtype=np.float64)
    for label, shape in enumerate(SHAPE_NAMES):
        for item in range(num_per_class):
            radius = rng.uniform(0.22, 0.38) * image_size
            centre_row, centre_col = rng.uniform(radius * 0.8, image_size - radius * 0.8, size=2)
            mask = _shape_mask(shape, grid[:, None] - centre_row, grid[None, :] - centre_col, radius)
            background = rng.uniform(0.0, 0.3, size=3)
            colour = rng.uniform(0.55, 1.0, size=3)
            image = np.where(mask[..., None], colour, background)
            images[label * num_per_class + item] = image + rng.normal(0.0, 0.06, size=image.shape)
    pixels = np.clip(np.rint(images * 255.0), 0, 255).astype(np.uint8).transpose(0, 3, 1, 2)
    labels = np.repeat(np.arange(len(SHAPE_NAMES)), num_per_class)
    return torch.from_numpy(np.ascontiguousarray(pixels)), torch.from_numpy(labels)


def load_synthetic(
    *,
    seed: int = 0,
    augment: bool = False,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    num_per_class: int = 200,
) -> DataSplits:
    """The shapes data set: ``num_per_class`` images of each of the six shapes, split by class.

    >>> splits = load_synthetic(num_per_class=10)
    >>> splits.sizes(), splits.class_names[:3]
    ({'train': 42, 'val': 6, 'test': 12}, ['circle', 'square', 'triangle'])
    """
    check_fractions(val_fraction, test_fraction)
    images, labels = make_shapes(num_per_class, seed=seed)
    everything = NormalizedImages(images, labels, mean=SYNTHETIC_MEAN, std=SYNTHETIC_STD)
    train, val, test = stratified_split(labels, [val_fraction, test_fraction], seed=seed)
    return DataSplits(
        train=everything.subset(train, augment=light_augmentation() if augment else None),
        val=everything.subset(val),
        test=everything.subset(test),
        num_classes=len(SHAPE_NAMES),
        in_channels=3,
        image_size=(images.shape[2], images.shape[3]),
        class_names=list(SHAPE_NAMES),
        name="synthetic",
        mean=SYNTHETIC_MEAN,
        std=SYNTHETIC_STD,
    )
