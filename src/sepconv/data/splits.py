"""What every data set loader returns: a :class:`DataSplits` of train/val/test, and how it is split.

All loaders store images as ``uint8`` and turn one item at a time into a normalized float tensor
(``C x H x W``) with an ``int`` label, so a 50,000-image set costs bytes, not float32s, in memory.
:func:`stratified_split` is the one place that decides which sample goes where: per class, shuffled by
``seed``, so every split keeps the class balance of the whole and the same seed gives the same split.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch.utils.data import Dataset, Subset

from sepconv.checks import check_float
from sepconv.errors import ParameterError

__all__ = [
    "DataSplits",
    "NormalizedImages",
    "SkippedFile",
    "check_fractions",
    "check_labels",
    "normalize",
    "stratified_split",
]

ImageTransform = Callable[[torch.Tensor], torch.Tensor]


class SkippedFile(NamedTuple):
    """A file (or hidden folder) a loader left out, and why; prints as ``path (reason)``.

    >>> str(SkippedFile("cats/notes.txt", "not an image file PIL can read"))
    'cats/notes.txt (not an image file PIL can read)'
    """

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path} ({self.reason})"


@dataclass
class DataSplits:
    """Train, validation and test sets of one data set, plus what a model needs to know about them.

    Items of every split are ``(image, label)``: a float tensor ``in_channels x H x W`` (normalized
    with ``mean``/``std``) and an ``int`` in ``range(num_classes)``. ``skipped`` lists what an image
    folder left out, each as a :class:`SkippedFile` with its reason: files that are not images, files
    outside the class folders, hidden folders, and unreadable images (with ``skip_bad_images=True``).
    """

    train: Dataset[Any]
    val: Dataset[Any]
    test: Dataset[Any]
    num_classes: int
    in_channels: int
    image_size: tuple[int, int]
    class_names: list[str]
    name: str
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    skipped: list[SkippedFile] = field(default_factory=list)

    def sizes(self) -> dict[str, int]:
        """Number of samples per split, e.g. ``{"train": 3500, "val": 500, "test": 1000}``."""
        # torch's Dataset declares no __len__; every split here has one
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}  # type: ignore[arg-type]


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(images - mean) / std`` per channel, for ``C x H x W`` or ``N x C x H x W`` float images.

    >>> normalize(torch.ones(1, 2, 2), [0.5], [0.25])[0, 0, 0].item()
    2.0
    """
    shape = (-1, 1, 1)
    mean_tensor = torch.as_tensor(mean, dtype=images.dtype).reshape(shape)
    std_tensor = torch.as_tensor(std, dtype=images.dtype).reshape(shape)
    return (images - mean_tensor) / std_tensor


class NormalizedImages(Dataset[tuple[torch.Tensor, int]]):
    """In-memory ``uint8`` images (``N x C x H x W``) served as normalized float tensors with int labels.

    ``augment`` (if given) runs on the float image in ``[0, 1]`` before normalization, so its fill
    value 0 is black, the background of digit images.

    >>> data = NormalizedImages(torch.full((2, 1, 2, 2), 255, dtype=torch.uint8), torch.tensor([0, 1]),
    ...                         mean=(0.5,), std=(0.5,))
    >>> image, label = data[1]
    >>> image.tolist(), label
    ([[[1.0, 1.0], [1.0, 1.0]]], 1)
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        augment: ImageTransform | None = None,
    ) -> None:
        if images.dim() != 4 or images.dtype != torch.uint8:
            raise ValueError(
                f"images must be a uint8 tensor N x C x H x W, got {images.dtype} {tuple(images.shape)}"
            )
        if labels.shape != (images.shape[0],):
            raise ValueError(
                f"labels must hold one label per image ({images.shape[0]}), got {tuple(labels.shape)}"
            )
        self.images = images
        self.labels = labels.to(torch.int64)
        self.mean = tuple(float(value) for value in mean)
        self.std = tuple(float(value) for value in std)
        self.augment = augment

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index].to(torch.float32).div_(255.0)
        if self.augment is not None:
            image = self.augment(image)
        return normalize(image, self.mean, self.std), int(self.labels[index])

    @property
    def draws_random(self) -> bool:
        """True when reading a sample draws random numbers (an ``augment`` runs)."""
        return self.augment is not None

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[torch.Tensor, int]]:
        """``[self[i] for i in indices]``, the same values bit for bit, read as one batch where no
        ``augment`` runs. A ``DataLoader`` calls this for each batch: one tensor operation per batch
        instead of a handful per image (about 50 us each, 10 ms per batch of 64 on a 2-core CPU)."""
        if self.augment is not None:
            return [self[index] for index in indices]
        rows = torch.as_tensor(indices, dtype=torch.int64)
        images = normalize(self.images[rows].to(torch.float32).div_(255.0), self.mean, self.std)
        return list(zip(images.unbind(0), self.labels[rows].tolist()))

    def subset(self, indices: torch.Tensor, augment: ImageTransform | None = None) -> NormalizedImages:
        """The samples at ``indices`` (a copy), with ``augment`` for this subset only."""
        return NormalizedImages(
            self.images[indices], self.labels[indices], mean=self.mean, std=self.std, augment=augment
        )


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    """Raise a ValueError naming the parameter unless both fractions are in [0, 1) and sum below 1."""
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        check_float(name, value, minimum=0, maximum=1, max_inclusive=False)
    if val_fraction + test_fraction >= 1.0:
        raise ParameterError(
            f"val_fraction + test_fraction must be below 1 to leave training samples, "
            f"got {val_fraction!r} + {test_fraction!r}",
            param="val_fraction",
        )


def stratified_split(
    labels: Sequence[int] | torch.Tensor,
    fractions: Sequence[float],
    *,
    seed: int,
    class_names: Sequence[str] | None = None,
) -> list[torch.Tensor]:
    """Split sample indices by class: per class, shuffle with ``seed`` and cut off ``fractions``.

    Returns one sorted index tensor for the remainder (the training split) followed by one per
    fraction. Each class contributes ``round(n * fraction)`` samples to a split (halves round up), so
    the class balance holds in every split. A class that would leave no training sample is an error
    naming it (``class_names[label]`` when given).

    >>> train, test = stratified_split([0] * 10 + [1] * 5, [0.2], seed=0)
    >>> len(train), len(test), sorted(int(i) // 10 for i in test)
    (12, 3, [0, 0, 1])
    """
    labels_tensor = torch.as_tensor(labels, dtype=torch.int64)
    generator = torch.Generator().manual_seed(seed)
    parts: list[list[torch.Tensor]] = [[] for _ in range(len(fractions) + 1)]
    for label in torch.unique(labels_tensor).tolist():
        members = torch.nonzero(labels_tensor == label).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        counts = [int(len(members) * fraction + 0.5) for fraction in fractions]
        if sum(counts) >= len(members):
            name = class_names[label] if class_names is not None else label
            raise ValueError(
                f"class {name!r} has only {len(members)} samples: too few to split into train, val and "
                f"test with fractions {list(fractions)}; add samples or lower the fractions"
            )
        start = 0
        for position, count in enumerate(counts, start=1):
            parts[position].append(members[start : start + count])
            start += count
        parts[0].append(members[start:])
    return [
        torch.sort(torch.cat(part)).values if part else torch.empty(0, dtype=torch.int64) for part in parts
    ]


def check_labels(splits: DataSplits) -> None:
    """Raise a ValueError naming the data set, split and label unless every label is in ``[0, num_classes)``.

    Reads only label tensors that are already in memory (``labels`` or ``targets`` of a split, through
    a ``Subset``); a split without them is not checked, since that would mean decoding every image.

    >>> images = torch.zeros(2, 1, 2, 2, dtype=torch.uint8)
    >>> data = NormalizedImages(images, torch.tensor([0, 3]), mean=(0.5,), std=(0.5,))
    >>> check_labels(DataSplits(data, data, data, 3, 1, (2, 2), ["a", "b", "c"], "toy"))
    Traceback (most recent call last):
    ...
    ValueError: data set 'toy' has label 3 in its train split; labels must be in [0, 3) (num_classes=3)
    """
    if len(splits.class_names) != splits.num_classes:
        raise ValueError(
            f"data set {splits.name!r} has num_classes={splits.num_classes} but "
            f"{len(splits.class_names)} class names"
        )
    for split_name in ("train", "val", "test"):
        labels = _known_labels(getattr(splits, split_name))
        if labels is None or labels.numel() == 0:
            continue
        outside = labels[(labels < 0) | (labels >= splits.num_classes)]
        if outside.numel():
            raise ValueError(
                f"data set {splits.name!r} has label {int(outside[0])} in its {split_name} split; labels "
                f"must be in [0, {splits.num_classes}) (num_classes={splits.num_classes})"
            )


def _known_labels(dataset: Dataset[Any]) -> torch.Tensor | None:
    """The labels of ``dataset`` when it holds them in memory (``labels``/``targets``), else None."""
    if isinstance(dataset, Subset):
        labels = _known_labels(dataset.dataset)
        return None if labels is None else labels[torch.as_tensor(dataset.indices, dtype=torch.int64)]
    for attribute in ("labels", "targets"):
        labels = getattr(dataset, attribute, None)
        if labels is not None:
            return torch.as_tensor(labels).flatten()
    return None
