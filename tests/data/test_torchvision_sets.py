"""``mnist``, ``fashion_mnist`` and ``cifar10`` read from small files written here in the official formats.

Each test writes a handful of images in the format torchvision reads (IDX files for the MNISTs, the
CIFAR-10 python batches), loads them through :func:`sepconv.data.load_dataset` with downloading off,
and checks that the images and labels come out exactly as written: the reference is the array the
test wrote, laid out by the format's own definition (C x H x W after sepconv's conversion).
"""

from __future__ import annotations

import os
import pickle
import struct

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar

from sepconv.data import load_dataset


def _write_idx(path, array: np.ndarray) -> None:
    """An IDX file (LeCun's MNIST format): 0, 0, type 0x08 (unsigned byte), rank; big-endian sizes; data."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _images_and_labels(count_per_class: int, shape: tuple[int, ...], seed: int):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10, dtype=np.uint8), count_per_class)
    rng.shuffle(labels)
    return rng.integers(0, 256, size=(len(labels), *shape), dtype=np.uint8), labels


def _rows(images: torch.Tensor, labels: torch.Tensor) -> list[tuple[bytes, int]]:
    """Each sample as (image bytes, label), sorted: compares sets of samples whatever their order."""
    return sorted((image.numpy().tobytes(), int(label)) for image, label in zip(images, labels))


@pytest.mark.parametrize(("name", "folder"), [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_formats_convert_exactly(tmp_path, name, folder):
    raw = tmp_path / folder / "raw"
    raw.mkdir(parents=True)
    train_images, train_labels = _images_and_labels(10, (28, 28), seed=1)
    test_images, test_labels = _images_and_labels(2, (28, 28), seed=2)
    _write_idx(raw / "train-images-idx3-ubyte", train_images)
    _write_idx(raw / "train-labels-idx1-ubyte", train_labels)
    _write_idx(raw / "t10k-images-idx3-ubyte", test_images)
    _write_idx(raw / "t10k-labels-idx1-ubyte", test_labels)

    splits = load_dataset(name, root=tmp_path, download=False, val_fraction=0.1)

    assert (splits.name, splits.num_classes, splits.in_channels, splits.image_size) == (name, 10, 1, (28, 28))
    # The official test file is the test split, in file order, with a channel axis added.
    assert splits.test.images.dtype == torch.uint8
    assert torch.equal(splits.test.images, torch.from_numpy(test_images)[:, None])
    assert splits.test.labels.tolist() == test_labels.tolist()
    # The official training file is cut per class into train and val (1 of each class's 10 in val).
    assert (len(splits.train), len(splits.val)) == (90, 10)
    assert sorted(splits.val.labels.tolist()) == list(range(10))
    together = torch.cat([splits.train.images, splits.val.images])
    together_labels = torch.cat([splits.train.labels, splits.val.labels])
    assert _rows(together, together_labels) == _rows(
        torch.from_numpy(train_images)[:, None], torch.from_numpy(train_labels)
    )
    # The served samples are the written pixels scaled to [0, 1] and normalized with the set's statistics.
    mean, std = {"mnist": (0.1307, 0.3081), "fashion_mnist": (0.2860, 0.3530)}[name]
    image, label = splits.test[3]
    assert label == test_labels[3]
    expected = (torch.from_numpy(test_images[3]).float()[None] / 255 - mean) / std
    # float32 division and subtraction of values below 10: a few ulps (1e-6) at most.
    torch.testing.assert_close(image, expected, rtol=0, atol=1e-6)


def _write_cifar_batch(path, images_chw: np.ndarray, labels: np.ndarray) -> None:
    # CIFAR-10's python version: a pickled dict; "data" is N x 3072 uint8, each row the 1024 red values
    # (row-major 32 x 32), then the green, then the blue: exactly a C x H x W image flattened.
    batch = {"data": images_chw.reshape(len(images_chw), 3072), "labels": labels.tolist()}
    path.write_bytes(pickle.dumps(batch))


def test_cifar10_format_converts_exactly(tmp_path, monkeypatch):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    train_images, train_labels = _images_and_labels(10, (3, 32, 32), seed=3)
    test_images, test_labels = _images_and_labels(1, (3, 32, 32), seed=4)
    for index, rows in enumerate(np.array_split(np.arange(100), 5)):  # data_batch_1 ... data_batch_5
        _write_cifar_batch(folder / f"data_batch_{index + 1}", train_images[rows], train_labels[rows])
    _write_cifar_batch(folder / "test_batch", test_images, test_labels)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": names}))
    # torchvision checks each file's MD5 against the official release; these files are ours, so the
    # check is reduced to "the file exists" (what a missing file still fails). torchvision reads them.
    monkeypatch.setattr(
        torchvision.datasets.cifar, "check_integrity", lambda path, md5=None: os.path.isfile(path)
    )

    splits = load_dataset("cifar10", root=tmp_path, download=False, val_fraction=0.1)

    assert (splits.num_classes, splits.in_channels, splits.image_size) == (10, 3, (32, 32))
    assert splits.class_names == names
    assert torch.equal(splits.test.images, torch.from_numpy(test_images))  # C x H x W, as written
    assert splits.test.labels.tolist() == test_labels.tolist()
    assert (len(splits.train), len(splits.val)) == (90, 10)
    together = torch.cat([splits.train.images, splits.val.images])
    together_labels = torch.cat([splits.train.labels, splits.val.labels])
    assert _rows(together, together_labels) == _rows(
        torch.from_numpy(train_images), torch.from_numpy(train_labels)
    )
    # One pixel read by hand from the file's layout: test image 0, green (plane 1), row 5, column 7.
    assert splits.test.images[0, 1, 5, 7].item() == test_images.reshape(10, 3072)[0, 1024 + 5 * 32 + 7]


def test_missing_files_are_not_downloaded_and_say_where_they_belong(tmp_path):
    with pytest.raises(FileNotFoundError) as raised:
        load_dataset("mnist", root=tmp_path, download=False)
    message = str(raised.value)
    assert f"data set 'mnist' not found under {tmp_path}" in message
    assert str(tmp_path / "MNIST" / "raw") in message and "download=True" in message
    assert list(tmp_path.iterdir()) == []  # nothing fetched, nothing created
