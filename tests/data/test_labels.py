"""load_dataset checks every data set's labels against its class count, where the labels enter."""

import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.utils.data import Subset

import sepconv.data.mnist5k
import sepconv.data.synthetic
import sepconv.data.torchvision_sets
from sepconv.data import DataSplits, NormalizedImages, check_labels, load_dataset


@pytest.mark.parametrize("name", ["synthetic", "mnist5k"])
def test_real_data_sets_pass(name):
    splits = load_dataset(name)
    check_labels(splits)  # what load_dataset ran; the labels it accepted span exactly the classes
    labels = torch.cat([splits.train.labels, splits.val.labels, splits.test.labels])
    assert labels.unique().tolist() == list(range(splits.num_classes))


def test_synthetic_label_out_of_range_is_named(monkeypatch):
    real = sepconv.data.synthetic.make_shapes

    def shapes_with_a_seventh_class(num_per_class, **kwargs):
        images, labels = real(num_per_class, **kwargs)
        labels[-5:] = 6  # six classes: 0..5
        return images, labels

    monkeypatch.setattr(sepconv.data.synthetic, "make_shapes", shapes_with_a_seventh_class)
    with pytest.raises(
        ValueError, match=re.escape("data set 'synthetic' has label 6 in its train split")
    ) as info:
        load_dataset("synthetic")
    assert "labels must be in [0, 6)" in str(info.value)


def test_mnist5k_negative_label_is_named(monkeypatch):
    pixels, labels = sepconv.data.mnist5k.mnist5k_arrays()
    bad_labels = labels.copy()
    bad_labels[bad_labels == 3] = -1  # a whole class, so the stratified split still has room for it
    monkeypatch.setattr(sepconv.data.mnist5k, "mnist5k_arrays", lambda: (pixels, bad_labels))
    with pytest.raises(ValueError, match=re.escape("data set 'mnist5k' has label -1 in its train split")):
        load_dataset("mnist5k")


def test_torchvision_targets_out_of_range_are_named(monkeypatch, tmp_path):
    def fake_open(name, root, *, train, download):
        count = 20 if train else 4
        targets = [index % 2 for index in range(count)]
        if not train:
            targets[-1] = 10  # the official test set names a class the set does not have
        return SimpleNamespace(
            data=np.zeros((count, 4, 4), dtype=np.uint8), targets=targets, classes=[str(d) for d in range(10)]
        )

    monkeypatch.setattr(sepconv.data.torchvision_sets, "_open", fake_open)
    with pytest.raises(ValueError, match=re.escape("data set 'mnist' has label 10 in its test split")):
        load_dataset("mnist", root=tmp_path)


def _splits(dataset, num_classes=2, class_names=("a", "b")) -> DataSplits:
    return DataSplits(dataset, dataset, dataset, num_classes, 1, (2, 2), list(class_names), "toy")


def test_labels_are_read_through_subsets_and_targets():
    images = torch.zeros(3, 1, 2, 2, dtype=torch.uint8)
    in_memory = NormalizedImages(images, torch.tensor([0, 1, 2]), mean=(0.5,), std=(0.5,))
    check_labels(_splits(Subset(in_memory, [0, 1])))  # the bad label 2 is not in the subset
    with pytest.raises(ValueError, match="has label 2 in its train split"):
        check_labels(_splits(Subset(in_memory, [2, 0])))
    with_targets = SimpleNamespace(targets=[1, 0, 5])
    with pytest.raises(ValueError, match="has label 5 in its train split"):
        check_labels(_splits(with_targets))


def test_class_names_must_match_num_classes():
    data = NormalizedImages(
        torch.zeros(1, 1, 2, 2, dtype=torch.uint8), torch.tensor([0]), mean=(0.5,), std=(0.5,)
    )
    with pytest.raises(ValueError, match=re.escape("data set 'toy' has num_classes=3 but 2 class names")):
        check_labels(_splits(data, num_classes=3))
