"""The light training augmentation shared by all data sets (``augment=True``), built on transforms v2.

A small random affine (rotation up to 10 degrees, shifts up to 10%, scale 0.9-1.1) keeps digits
readable and shapes recognisable; nothing flips, because a flipped digit is a different digit. It runs
on float images in ``[0, 1]`` before normalization, filling uncovered pixels with black.
"""

from __future__ import annotations

from torchvision.transforms import v2

__all__ = ["light_augmentation"]


def light_augmentation() -> v2.Transform:
    """A random small affine transform for ``C x H x W`` float tensors (training split only).

    >>> import torch
    >>> light_augmentation()(torch.zeros(1, 28, 28)).shape
    torch.Size([1, 28, 28])
    """
    return v2.RandomAffine(degrees=10.0, translate=(0.1, 0.1), scale=(0.9, 1.1), fill=0.0)
