"""``load_dataset(name)``: the one entry point that turns a data set name into :class:`DataSplits`.

Names: ``mnist5k`` (embedded, the default of the CLI), ``synthetic``, ``mnist``, ``fashion_mnist``,
``cifar10`` and ``imagefolder:PATH``. Arguments a data set has no use for are ignored (``root`` and
``download`` for the embedded ones, ``test_fraction`` where an official test set exists). Every data
set's labels are checked against its class count here, where they enter (:func:`check_labels`).
"""

from __future__ import annotations

from pathlib import Path

from sepconv.checks import check_int
from sepconv.data.splits import DataSplits, check_fractions, check_labels

__all__ = ["IMAGEFOLDER_PREFIX", "list_datasets", "load_dataset"]

#: The prefix that names a folder of images as a data set: ``imagefolder:PATH``.
IMAGEFOLDER_PREFIX = "imagefolder:"
_EMBEDDED = ("mnist5k", "synthetic")
_TORCHVISION = ("mnist", "fashion_mnist", "cifar10")


def list_datasets() -> list[str]:
    """The names :func:`load_dataset` accepts (``imagefolder:PATH`` stands for any folder).

    >>> list_datasets()
    ['mnist5k', 'synthetic', 'mnist', 'fashion_mnist', 'cifar10', 'imagefolder:PATH']
    """
    return [*_EMBEDDED, *_TORCHVISION, IMAGEFOLDER_PREFIX + "PATH"]


def load_dataset(
    name: str,
    *,
    root: str | Path | None = None,
    seed: int = 0,
    augment: bool = False,
    download: bool = False,
    skip_bad_images: bool = False,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
) -> DataSplits:
    """Load the data set ``name`` and split it deterministically (by ``seed``) and per class.

    ``augment`` adds a light random affine to the training split only. ``download`` lets the
    torchvision data sets fetch their files into ``root``; ``skip_bad_images`` leaves unreadable
    files of an image folder out (listed in ``DataSplits.skipped``) instead of failing. A label
    outside ``[0, num_classes)`` is a ValueError naming the data set and the label.

    >>> splits = load_dataset("synthetic", seed=1)
    >>> splits.name, splits.num_classes, splits.in_channels, splits.image_size
    ('synthetic', 6, 3, (32, 32))
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a data set name (str), got {name!r}")
    seed = check_int("seed", seed)
    check_fractions(val_fraction, test_fraction)
    splits = _load(
        name,
        root=root,
        seed=seed,
        augment=augment,
        download=download,
        skip_bad_images=skip_bad_images,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
    )
    check_labels(splits)
    return splits


def _load(
    name: str,
    *,
    root: str | Path | None,
    seed: int,
    augment: bool,
    download: bool,
    skip_bad_images: bool,
    val_fraction: float,
    test_fraction: float,
) -> DataSplits:
    """Dispatch ``name`` to its loader (arguments already checked by :func:`load_dataset`)."""
    if name == "mnist5k":
        from sepconv.data.mnist5k import load_mnist5k

        return load_mnist5k(
            seed=seed, augment=augment, val_fraction=val_fraction, test_fraction=test_fraction
        )
    if name == "synthetic":
        from sepconv.data.synthetic import load_synthetic

        return load_synthetic(
            seed=seed, augment=augment, val_fraction=val_fraction, test_fraction=test_fraction
        )
    if name in _TORCHVISION:
        from sepconv.data.torchvision_sets import load_torchvision_dataset

        return load_torchvision_dataset(
            name, root=root, seed=seed, augment=augment, download=download, val_fraction=val_fraction
        )
    if name.startswith(IMAGEFOLDER_PREFIX) and len(name) > len(IMAGEFOLDER_PREFIX):
        from sepconv.data.imagefolder import load_image_folder

        return load_image_folder(
            name[len(IMAGEFOLDER_PREFIX) :],
            seed=seed,
            augment=augment,
            skip_bad_images=skip_bad_images,
            val_fraction=val_fraction,
            test_fraction=test_fraction,
        )
    raise ValueError(f"unknown data set {name!r}; valid names: {', '.join(list_datasets())}")
