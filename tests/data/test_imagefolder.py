"""imagefolder:PATH: layouts, channels, sizes, and bad input (corrupt files, stray files, ambiguous layouts).

Pixel scaling per PIL mode is tested in test_image_modes.py.
"""

import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sepconv.data import SkippedFile, load_dataset
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
        # float32 rounding of x / 255 and of the normalization is ~1e-7, inside the default tolerances
        # (rtol 1.3e-6, atol 1e-5), while a wrong file or scale is off by a grey level (2 / 255 = 8e-3).
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
    _write_images(tmp_path / "test", "x", 1, start=80)
    _write_images(tmp_path / "test", "y", 2, start=90)
    splits = load_dataset(f"imagefolder:{tmp_path}")
    assert splits.class_names == ["x", "y"]
    assert [Path(path).name for path, _ in splits.test.samples] == ["080.png", "090.png", "091.png"]
    assert splits.test.labels.tolist() == [0, 1, 1]
    assert splits.sizes() == {"train": 10, "val": 2, "test": 3}  # val carved from train/, one per class


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
    assert info.value.path == str(bad) and "skip_bad_images=True" in str(info.value)


def test_skip_bad_images_counts_and_logs(folder, caplog):
    bad = folder / "cat" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8garbage")
    with caplog.at_level(logging.WARNING, logger="sepconv.data"):
        splits = load_dataset(f"imagefolder:{folder}", skip_bad_images=True)
    assert [entry.path for entry in splits.skipped] == [str(bad)]
    assert splits.skipped[0].reason.startswith("unreadable image: cannot identify image file")
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


# ---- every file PIL can read is loaded; everything else is listed with its reason ----------------------


def _sample_names(splits) -> set[str]:
    return {Path(path).name for split in (splits.train, splits.val, splits.test) for path, _ in split.samples}


def test_formats_pil_reads_are_loaded_whatever_their_name(folder):
    pixels = np.full((6, 8, 3), 7, dtype=np.uint8)
    Image.fromarray(pixels).save(folder / "ant" / "extra.tga")  # a PIL format torchvision's list lacks
    Image.fromarray(pixels).save(folder / "bee" / "extra.gif")
    Image.fromarray(pixels).save(folder / "cat" / "no_extension", format="PNG")
    splits = load_dataset(f"imagefolder:{folder}")
    assert {"extra.tga", "extra.gif", "no_extension"} <= _sample_names(splits)
    assert sum(splits.sizes().values()) == 33 and splits.skipped == []


def test_non_image_files_are_listed_with_their_reason(folder, caplog):
    (folder / "ant" / "notes.txt").write_text("not an image")
    (folder / "bee" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(64))
    (folder / "cat" / "P1 text").write_text("P1 looks like a PBM header but is text")
    with caplog.at_level(logging.WARNING, logger="sepconv.data"):
        splits = load_dataset(f"imagefolder:{folder}")
    reason = "not an image file PIL can read"
    assert splits.skipped == [
        SkippedFile(str(folder / "ant" / "notes.txt"), reason),
        SkippedFile(str(folder / "bee" / ".DS_Store"), reason),
        SkippedFile(str(folder / "cat" / "P1 text"), reason),
    ]
    assert sum(splits.sizes().values()) == 30
    assert "left out 3 file(s)" in caplog.text and "notes.txt (not an image file PIL can read)" in caplog.text


def test_files_outside_class_folders_are_reported(folder):
    (folder / "readme.txt").write_text("about this data set")
    Image.fromarray(np.zeros((6, 8, 3), dtype=np.uint8)).save(folder / "loose.png")
    splits = load_dataset(f"imagefolder:{folder}")
    outside = "file outside the class folders (it has no class)"
    assert splits.skipped == [
        SkippedFile(str(folder / "loose.png"), outside),
        SkippedFile(str(folder / "readme.txt"), outside),
    ]
    assert "loose.png" not in _sample_names(splits)


def test_stray_files_of_a_pre_split_folder_are_reported(tmp_path):
    for split, count in (("train", 6), ("val", 1)):
        _write_images(tmp_path / split, "x", count)
        _write_images(tmp_path / split, "y", count, start=50)
    Image.fromarray(np.zeros((6, 8, 3), dtype=np.uint8)).save(tmp_path / "train" / "stray.png")
    (tmp_path / "val" / "labels.csv").write_text("x,y")
    (tmp_path / "notes.md").write_text("root")
    splits = load_dataset(f"imagefolder:{tmp_path}")
    assert sorted(entry.path for entry in splits.skipped) == sorted(
        str(path)
        for path in (tmp_path / "notes.md", tmp_path / "train" / "stray.png", tmp_path / "val" / "labels.csv")
    )
    assert {entry.reason for entry in splits.skipped} == {"file outside the class folders (it has no class)"}


def test_hidden_folders_are_not_classes_and_are_reported(folder):
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("ref: refs/heads/main")
    _write_images(folder / "bee", ".ipynb_checkpoints", 1, start=99)
    splits = load_dataset(f"imagefolder:{folder}")
    assert splits.class_names == ["ant", "bee", "cat"]
    assert splits.skipped == [
        SkippedFile(str(folder / ".git"), "hidden folder, not scanned"),
        SkippedFile(
            str(folder / "bee" / ".ipynb_checkpoints" / "099.png"),
            "inside the hidden folder .ipynb_checkpoints",
        ),
    ]
    assert sum(splits.sizes().values()) == 30


# ---- fewer than two classes -------------------------------------------------------------------------------


def test_single_class_folder_is_refused(tmp_path):
    _write_images(tmp_path, "only", 10)
    with pytest.raises(
        ValueError, match=re.escape(f"{tmp_path} has 1 class folder ('only'): a classifier needs at least 2")
    ):
        load_dataset(f"imagefolder:{tmp_path}")


def test_single_class_train_folder_is_refused(tmp_path):
    _write_images(tmp_path / "train", "only", 10)
    _write_images(tmp_path / "val", "only", 2)
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'train'} has 1 class folder ('only')")):
        load_dataset(f"imagefolder:{tmp_path}")


# ---- layout detection: ambiguous layouts are errors naming the folder -------------------------------------


def test_train_beside_other_folders_is_ambiguous(folder):
    _write_images(folder, "train", 3)
    with pytest.raises(
        ValueError, match=re.escape(f"ambiguous layout in {folder}: train/ marks a pre-split folder")
    ) as info:
        load_dataset(f"imagefolder:{folder}")
    assert "also holds ant/, bee/, cat/" in str(info.value) and "is 'train' a class?" in str(info.value)


@pytest.mark.parametrize("given", [["val"], ["test"], ["val", "test"]])
def test_val_or_test_without_train_is_ambiguous(tmp_path, given):
    for split in given:
        _write_images(tmp_path / split, "x", 3)
        _write_images(tmp_path / split, "y", 3, start=50)
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"ambiguous layout in {tmp_path}: it holds {', '.join(f'{name}/' for name in given)} but no train/"
        ),
    ):
        load_dataset(f"imagefolder:{tmp_path}")


def test_train_alone_is_a_pre_split_folder_not_a_class(tmp_path):
    _write_images(tmp_path / "train", "x", 10)
    _write_images(tmp_path / "train", "y", 10, start=50)
    splits = load_dataset(f"imagefolder:{tmp_path}")
    assert splits.class_names == ["x", "y"]
    assert splits.sizes() == {"train": 14, "val": 2, "test": 4}  # carved from train/ per class: 1 and 2 of 10


def test_nested_class_folders_are_refused(tmp_path):
    _write_images(tmp_path / "animals", "cat", 3)
    _write_images(tmp_path / "animals", "dog", 3, start=10)
    _write_images(tmp_path / "plants", "fern", 3, start=20)
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"nested layout in {tmp_path}: images must sit directly in their class folder, but {tmp_path / 'animals' / 'cat'}"
        ),
    ) as info:
        load_dataset(f"imagefolder:{tmp_path}")
    assert "and 2 more are folders inside a class folder" in str(info.value)


def test_images_beside_a_sub_folder_are_still_nested(folder):
    _write_images(folder / "ant", "queens", 2, start=90)
    with pytest.raises(
        ValueError, match=re.escape(f"but {folder / 'ant' / 'queens'} is a folder inside a class folder")
    ):
        load_dataset(f"imagefolder:{folder}")


def test_val_folder_lacking_a_class_is_refused(tmp_path):
    for name, start in (("x", 0), ("y", 50)):
        _write_images(tmp_path / "train", name, 6, start=start)
    _write_images(tmp_path / "val", "x", 2, start=80)
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'val'} lacks classes that train/ has: y")):
        load_dataset(f"imagefolder:{tmp_path}")


def test_test_folder_with_an_extra_class_is_refused(tmp_path):
    for name, start in (("x", 0), ("y", 50)):
        _write_images(tmp_path / "train", name, 6, start=start)
        _write_images(tmp_path / "test", name, 2, start=start + 20)
    _write_images(tmp_path / "test", "z", 2, start=90)
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'test'} has classes that train/ lacks: z")):
        load_dataset(f"imagefolder:{tmp_path}")


def test_labels_follow_the_train_class_order_in_every_split(tmp_path):
    for split, count in (("train", 4), ("val", 1), ("test", 1)):
        for label, name in enumerate(("b_second", "a_first")):
            _write_images(tmp_path / split, name, count, start=10 * label)
    splits = load_dataset(f"imagefolder:{tmp_path}")
    assert splits.class_names == ["a_first", "b_second"]
    for split in (splits.train, splits.val, splits.test):
        assert all(label == (0 if "a_first" in path else 1) for path, label in split.samples)
