"""load_dataset: names, argument errors, and the offline error of the torchvision data sets."""

import pytest
import torch

from sepconv.data import list_datasets, load_dataset, stratified_split
from sepconv.data.torchvision_sets import DatasetNotFoundError


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown data set 'mnist6k'.*mnist5k.*imagefolder:PATH"):
        load_dataset("mnist6k")


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"val_fraction": -0.1}, "val_fraction must be a finite number in \\[0, 1\\), got -0.1"),
        ({"test_fraction": 1.0}, "test_fraction must be a finite number in \\[0, 1\\), got 1.0"),
        ({"val_fraction": "0.1"}, "val_fraction .* got '0.1'"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "val_fraction \\+ test_fraction must be below 1"),
        ({"seed": 1.5}, "seed must be an integer, got 1.5"),
    ],
)
def test_bad_arguments_name_parameter_and_value(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        load_dataset("synthetic", **kwargs)


def test_list_datasets():
    assert list_datasets()[:2] == ["mnist5k", "synthetic"]
    assert {"mnist", "fashion_mnist", "cifar10"} <= set(list_datasets())


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10"])
def test_missing_torchvision_files_say_how_to_get_them(tmp_path, name):
    with pytest.raises(
        DatasetNotFoundError, match=f"{name}.*not found under {tmp_path}.*download=True"
    ) as info:
        load_dataset(name, root=tmp_path)
    assert isinstance(info.value, FileNotFoundError)
    assert list(tmp_path.iterdir()) == [] or all(path.is_dir() for path in tmp_path.rglob("*"))


def test_default_root_follows_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SEPCONV_DATA", str(tmp_path / "here"))
    with pytest.raises(DatasetNotFoundError, match=str(tmp_path / "here")):
        load_dataset("mnist")


def test_stratified_split_partitions_and_balances():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    train, val, test = stratified_split(labels, [0.1, 0.2], seed=0)
    everything = torch.cat([train, val, test])
    assert sorted(everything.tolist()) == list(range(100))
    assert torch.bincount(labels[val]).tolist() == [5, 3, 2]
    assert torch.bincount(labels[test]).tolist() == [10, 6, 4]


def test_class_too_small_to_split_is_named():
    with pytest.raises(ValueError, match="class 'cat' has only 2 samples"):
        stratified_split([0] * 10 + [1] * 2, [0.5, 0.4], seed=0, class_names=["dog", "cat"])
