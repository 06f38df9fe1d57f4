"""imagefolder:PATH: layouts, channels, sizes, and bad input (corrupt files, empty folders and classes)."""

import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sepconv.data import load_dataset
from sepconv.data.imagefolder import BadImageError


def _write_images(
    folder: Path, class_name: str, count: int, *, mode: str = "RGB", size=(8, 6), start: int = 0
):
    """Write ``count`` images whose pixels all equal their index (so an item can be traced to its file)."""
    (folder / class_name).mkdir(parents=True, exist_ok=True)
    channels = 3 if mode == "RGB" else 1
    paths = []
    for index in range(start, start + count):
        pixels = np.full((size[1], size[0], channels), index, dtype=np.uint8).squeeze(
            -1 if channels == 1 else ()
        )
        path = folder / class_name / f"{index:03d}.png"
        Image.fromarray(pixels, mode=mode).save(path)
        paths.append(path)
    return paths


@pytest.fixture
def folder(tmp_path):
    for offset, name in enumerate(["ant", "bee", "cat"]):
        _write_images(tmp_path, name, 10, start=offset * 10)
    return tmp_path


def test_split_is_stratified_and_items_match_files(folder):
    splits = load_dataset(f"imagefolder:{folder}")
    assert splits.class_names == ["ant", "bee", "cat"]
    assert (splits.num_classes, splits.in_channels, splits.image_size) == (3, 3, (6, 8))
    assert splits.sizes() == {"train": 21, "val": 3, "test": 6}
    assert torch.bincount(splits.test.labels).tolist() == [2, 2, 2]
    for index in range(len(splits.train)):
        image, label = splits.train[index]
        path, _ = splits.train.samples[index]
        pixel_value = int(Path(path).stem)
        assert label == pixel_value // 10 and type(label) is int
        torch.testing.assert_close(image, torch.full((3, 6, 8), (pixel_value / 255 - 0.5) / 0.5))


def test_grayscale_folder_gives_one_channel(tmp_path):
    for name in ("a", "b"):
        _write_images(tmp_path, name, 5, mode="L")
    splits = load_dataset(f"imagefolder:{tmp_path}")
    assert splits.in_channels == 1 and splits.train[0][0].shape == (1, 6, 8)


def test_mixed_modes_and_sizes_become_rgb_64(tmp_path):
    _write_images(tmp_path, "a", 5, mode="L", size=(20, 10))
    _write_images(tmp_path, "b", 5, size=(30, 40))
    splits = load_dataset(f"imagefolder:{tmp_path}")
    assert splits.in_channels == 3 and splits.image_size == (64, 64)
    assert all(splits.train[i][0].shape == (3, 64, 64) for i in range(len(splits.train)))


def test_train_val_test_subfolders_are_used_as_given(tmp_path):
    _write_images(tmp_path / "train", "x", 6)
    _write_images(tmp_path / "train", "y", 6, start=50)
    _write_images(tmp_path / "test", "y", 2, start=90)
    splits = load_dataset(f"imagefolder:{tmp_path}")
    assert splits.class_names == ["x", "y"]
    assert [Path(path).name for path, _ in splits.test.samples] == ["090.png", "091.png"]
    assert splits.test.labels.tolist() == [1, 1]
    assert splits.sizes() == {"train": 10, "val": 2, "test": 2}  # val carved from train/, one per class


@pytest.mark.parametrize(
    "content", [b"", b"this is not an image", "truncate"], ids=["empty", "garbage", "truncated"]
)
def test_corrupt_image_is_named_up_front(folder, content):
    bad = folder / "bee" / "broken.png"
    if content == "truncate":
        good = (folder / "bee" / "010.png").read_bytes()
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(bad)
        bad.write_bytes(bad.read_bytes()[: len(good) // 2 + 200])
    else:
        bad.write_bytes(content)
    with pytest.raises(BadImageError, match=r"broken\.png") as info:
        load_dataset(f"imagefolder:{folder}")
    assert info.value.path == str(bad) and "--skip-bad-images" in str(info.value)


def test_skip_bad_images_counts_and_logs(folder, caplog):
    bad = folder / "cat" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8garbage")
    with caplog.at_level(logging.WARNING, logger="sepconv.data"):
        splits = load_dataset(f"imagefolder:{folder}", skip_bad_images=True)
    assert splits.skipped == [str(bad)]
    assert "skipped 1 unreadable image" in caplog.text and "broken.jpg" in caplog.text
    assert sum(splits.sizes().values()) == 30


def test_class_with_only_bad_images_is_an_error(folder):
    (folder / "dog").mkdir()
    (folder / "dog" / "x.png").write_bytes(b"nope")
    with pytest.raises(ValueError, match=r"'dog'.*no readable images"):
        load_dataset(f"imagefolder:{folder}", skip_bad_images=True)


def test_empty_class_folder_is_named(folder):
    (folder / "dog").mkdir()
    (folder / "dog" / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match=re.escape(f"class 'dog' has no images: {folder / 'dog'}")):
        load_dataset(f"imagefolder:{folder}")


def test_empty_and_missing_folders(tmp_path):
    with pytest.raises(ValueError, match=re.escape(f"no class folders in {tmp_path}")):
        load_dataset(f"imagefolder:{tmp_path}")
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        load_dataset(f"imagefolder:{tmp_path / 'nowhere'}")


def test_augment_applies_to_train_only(folder):
    splits = load_dataset(f"imagefolder:{folder}", augment=True)
    assert splits.train.augment is not None and splits.val.augment is None and splits.test.augment is None
    assert splits.train[0][0].shape == (3, 6, 8)
