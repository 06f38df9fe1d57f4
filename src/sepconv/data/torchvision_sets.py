"""``mnist``, ``fashion_mnist`` and ``cifar10`` through torchvision, downloaded only when asked.

The files live under ``root`` (default: ``$SEPCONV_DATA``, else ``~/.cache/sepconv/data``) in
torchvision's own layout. Without ``download=True`` nothing touches the network: missing files are a
:class:`DatasetNotFoundError` that says where the files should be and how to fetch them. The official
test set is the test split; the validation split is carved out of the official training set per
class (``val_fraction``), so ``test_fraction`` does not apply here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sepconv.data.augment import light_augmentation
from sepconv.data.splits import DataSplits, NormalizedImages, check_fractions, stratified_split

__all__ = ["TORCHVISION_DATASETS", "DatasetNotFoundError", "default_data_root", "load_torchvision_dataset"]


class DatasetNotFoundError(FileNotFoundError):
    """The files of a data set are not on disk (and downloading was not asked for, or failed)."""


@dataclass(frozen=True)
class _TorchvisionSet:
    class_name: str  # the class in torchvision.datasets
    folder: str  # where torchvision keeps the files, relative to root
    mean: tuple[float, ...]
    std: tuple[float, ...]


#: The torchvision data sets sepconv can load by name, with where their files are and their normalization.
TORCHVISION_DATASETS: dict[str, _TorchvisionSet] = {
    "mnist": _TorchvisionSet("MNIST", "MNIST/raw", (0.1307,), (0.3081,)),
    "fashion_mnist": _TorchvisionSet("FashionMNIST", "FashionMNIST/raw", (0.2860,), (0.3530,)),
    "cifar10": _TorchvisionSet(
        "CIFAR10", "cifar-10-batches-py", (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    ),
}


def default_data_root() -> Path:
    """Where downloaded data sets live: ``$SEPCONV_DATA`` if set, else ``~/.cache/sepconv/data``."""
    configured = os.environ.get("SEPCONV_DATA")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "sepconv" / "data"


def _open(name: str, root: Path, *, train: bool, download: bool) -> object:
    import torchvision.datasets

    entry = TORCHVISION_DATASETS[name]
    dataset_class = getattr(torchvision.datasets, entry.class_name)
    try:
        return dataset_class(root=str(root), train=train, download=download)
    except (RuntimeError, OSError) as error:
        # torchvision says "Dataset not found" when files are missing; a failed download is a URLError
        # (an OSError) or a RuntimeError about a bad checksum.
        where = root / entry.folder
        how = (
            f"the download failed ({error}); check the network, or copy the files of torchvision's "
            f"{entry.class_name} into {where}"
            if download
            else f"download them (load_dataset({name!r}, download=True)), or copy the "
            f"files of torchvision's {entry.class_name} into {where}"
        )
        raise DatasetNotFoundError(f"data set {name!r} not found under {root}: {how}") from error


def load_torchvision_dataset(
    name: str,
    *,
    root: str | Path | None = None,
    seed: int = 0,
    augment: bool = False,
    download: bool = False,
    val_fraction: float = 0.1,
) -> DataSplits:
    """Load ``name`` (a key of :data:`TORCHVISION_DATASETS`) from ``root`` as uint8 tensors, split."""
    if name not in TORCHVISION_DATASETS:
        raise ValueError(f"unknown torchvision data set {name!r}; known: {', '.join(TORCHVISION_DATASETS)}")
    check_fractions(val_fraction, 0.0)
    entry = TORCHVISION_DATASETS[name]
    root_path = Path(root).expanduser() if root is not None else default_data_root()
    official_train = _open(name, root_path, train=True, download=download)
    official_test = _open(name, root_path, train=False, download=False)
    train_all = _as_images(official_train, entry)
    test = _as_images(official_test, entry)
    train_indices, val_indices = stratified_split(train_all.labels, [val_fraction], seed=seed)
    height, width = train_all.images.shape[2:]
    return DataSplits(
        train=train_all.subset(train_indices, augment=light_augmentation() if augment else None),
        val=train_all.subset(val_indices),
        test=test,
        num_classes=len(official_train.classes),  # type: ignore[attr-defined]
        in_channels=train_all.images.shape[1],
        image_size=(int(height), int(width)),
        class_names=list(official_train.classes),  # type: ignore[attr-defined]
        name=name,
        mean=entry.mean,
        std=entry.std,
    )


def _as_images(dataset: object, entry: _TorchvisionSet) -> NormalizedImages:
    """torchvision's in-memory arrays (MNIST: N x H x W, CIFAR: N x H x W x C) as N x C x H x W images."""
    data = dataset.data  # type: ignore[attr-defined]
    images = torch.from_numpy(np.ascontiguousarray(data)) if isinstance(data, np.ndarray) else data
    images = images.unsqueeze(1) if images.dim() == 3 else images.permute(0, 3, 1, 2).contiguous()
    labels = torch.as_tensor(dataset.targets, dtype=torch.int64)  # type: ignore[attr-defined]
    return NormalizedImages(images.to(torch.uint8), labels, mean=entry.mean, std=entry.std)
