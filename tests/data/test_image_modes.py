"""imagefolder:PATH pixel scaling: every PIL mode maps to [0, 1] by its real range (hand-computed values).

Each test writes one probe image (three pixels) into class ``a`` and the same image into class ``b``
(a data set needs two classes), loads the folder with no val/test carving, and compares the probe's
item with the hand-computed pixels, normalized as the loader does ((x - 0.5) / 0.5).
"""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sepconv.data import load_dataset
from sepconv.data.imagefolder import BadImageError

# float32 rounding of x / 255 (or / 65535) and of the normalization: each step is within half an ulp
# of numbers below 2 (1.2e-7), so a few steps stay well under 1e-6, while one 8-bit step is 3.9e-3.
TOLERANCE = 1e-6


def _load_probe(tmp_path: Path, image: Image.Image, suffix: str, **kwargs) -> tuple:
    """Save ``image`` as a/probe and b/other; return (probe item, data set)."""
    for class_name, stem in (("a", "probe"), ("b", "other")):
        (tmp_path / class_name).mkdir(parents=True)
        image.save(tmp_path / class_name / f"{stem}{suffix}")
    splits = load_dataset(f"imagefolder:{tmp_path}", val_fraction=0.0, test_fraction=0.0, **kwargs)
    index = next(i for i, (path, _) in enumerate(splits.train.samples) if Path(path).stem == "probe")
    return splits.train[index][0], splits


def _expected(channels: list[list[float]]) -> torch.Tensor:
    """Hand-computed [0, 1] pixels, one list of three per channel, normalized like the loader."""
    return ((torch.tensor(channels, dtype=torch.float64) - 0.5) / 0.5).to(torch.float32).unsqueeze(1)


def _palette_image(palette: list[tuple[int, int, int]], indices: list[int]) -> Image.Image:
    image = Image.new("P", (len(indices), 1))
    image.putpalette([value for colour in palette for value in colour])
    image.putdata(indices)
    return image


CASES = {
    # mode 1: white is 1.0 (PIL's L conversion gives 255), black 0.0
    "1": (Image.fromarray(np.array([[True, False, True]])), ".png", [[1.0, 0.0, 1.0]]),
    "L": (Image.fromarray(np.array([[0, 128, 255]], dtype=np.uint8)), ".png", [[0.0, 128 / 255, 1.0]]),
    # LA: the alpha channel (0, 255, 128) is dropped, the grey values stay as they are
    "LA": (
        Image.fromarray(np.array([[[10, 0], [20, 255], [255, 128]]], dtype=np.uint8)),
        ".png",
        [[10 / 255, 20 / 255, 1.0]],
    ),
    # colour palette: indices 1, 2, 0 of (black, red, (0, 128, 255)) become RGB
    "P-colour": (
        _palette_image([(0, 0, 0), (255, 0, 0), (0, 128, 255)], [1, 2, 0]),
        ".png",
        [[1.0, 0.0, 0.0], [0.0, 128 / 255, 0.0], [0.0, 1.0, 0.0]],
    ),
    # grey palette: one channel, the grey level of each used entry
    "P-grey": (
        _palette_image([(0, 0, 0), (200, 200, 200), (255, 255, 255)], [1, 2, 0]),
        ".gif",
        [[200 / 255, 1.0, 0.0]],
    ),
    "RGB": (
        Image.fromarray(np.array([[[255, 0, 10], [0, 255, 20], [64, 128, 255]]], dtype=np.uint8)),
        ".png",
        [[1.0, 0.0, 64 / 255], [0.0, 1.0, 128 / 255], [10 / 255, 20 / 255, 1.0]],
    ),
    # RGBA: alpha dropped, not composited: the fully transparent first pixel keeps its colour
    "RGBA": (
        Image.fromarray(np.array([[[10, 20, 30, 0], [255, 0, 0, 255], [0, 0, 255, 128]]], dtype=np.uint8)),
        ".png",
        [[10 / 255, 1.0, 0.0], [20 / 255, 0.0, 0.0], [30 / 255, 0.0, 1.0]],
    ),
    # 16-bit PNG: 65535 is 1.0 (not 257.0, not clipped at 255), 32768 about one half
    "I;16": (
        Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.uint16)),
        ".png",
        [[0.0, 32768 / 65535, 1.0]],
    ),
    # 32-bit integer TIFF holding 16-bit data: the same scale
    "I": (
        Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.int32)),
        ".tif",
        [[0.0, 32768 / 65535, 1.0]],
    ),
    "F": (Image.fromarray(np.array([[0.0, 0.25, 1.0]], dtype=np.float32)), ".tif", [[0.0, 0.25, 1.0]]),
    # CMYK -> RGB is (255 - C, 255 - M, 255 - Y) when K is 0, and black when K is 255
    "CMYK": (
        Image.frombytes("CMYK", (3, 1), bytes([255, 0, 0, 0, 0, 0, 0, 255, 0, 128, 0, 0])),
        ".tif",
        [[0.0, 0.0, 1.0], [1.0, 0.0, 127 / 255], [1.0, 0.0, 1.0]],
    ),
    # YCbCr (JFIF): (128, 128, 128) is mid grey, (255, 128, 128) white, and (76, 85, 255) gives
    # R = 76 + 1.402 * 127 = 254.05 -> 254, G = 76 + 0.344136 * 43 - 0.714136 * 127 = 0.10 -> 0,
    # B = 76 - 1.772 * 43 < 0 -> 0
    "YCbCr": (
        Image.frombytes("YCbCr", (3, 1), bytes([128, 128, 128, 255, 128, 128, 76, 85, 255])),
        ".tif",
        [[128 / 255, 1.0, 254 / 255], [128 / 255, 1.0, 0.0], [128 / 255, 1.0, 0.0]],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_mode_is_scaled_by_its_range(tmp_path, case):
    image, suffix, channels = CASES[case]
    with Image.open(_save_and_reopen(tmp_path, image, suffix)) as reopened:  # the file has the mode tested
        assert reopened.mode == case.split("-")[0]
    item, splits = _load_probe(tmp_path / "data", image, suffix)
    assert splits.in_channels == len(channels)
    torch.testing.assert_close(item, _expected(channels), rtol=0.0, atol=TOLERANCE)


def _save_and_reopen(tmp_path: Path, image: Image.Image, suffix: str) -> Path:
    path = tmp_path / f"check{suffix}"
    image.save(path)
    return path


def test_grey_16_bit_beside_colour_is_repeated_to_rgb(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.uint16)).save(tmp_path / "a" / "probe.png")
    Image.new("RGB", (3, 1), (255, 0, 0)).save(tmp_path / "b" / "red.png")
    splits = load_dataset(f"imagefolder:{tmp_path}", val_fraction=0.0, test_fraction=0.0)
    assert splits.in_channels == 3
    probe = next(i for i, (path, _) in enumerate(splits.train.samples) if "probe" in path)
    grey = [0.0, 32768 / 65535, 1.0]
    torch.testing.assert_close(splits.train[probe][0], _expected([grey] * 3), rtol=0.0, atol=TOLERANCE)


@pytest.mark.parametrize(
    ("pixels", "reason"),
    [
        (np.array([[0, 70000, 5]], dtype=np.int32), "I pixels range over 0..70000"),
        (np.array([[0, -1, 5]], dtype=np.int32), "I pixels range over -1..5"),
        (np.array([[0.0, 1.5, 0.5]], dtype=np.float32), "float pixels range over 0.0..1.5"),
        (np.array([[0.0, math.nan, 0.5]], dtype=np.float32), "expected finite values in \\[0, 1\\]"),
    ],
    ids=["int-above-16-bit", "int-negative", "float-above-1", "float-nan"],
)
def test_pixels_without_a_known_scale_are_refused_or_skipped(tmp_path, pixels, reason):
    for class_name in ("a", "b"):
        (tmp_path / class_name).mkdir()
        Image.fromarray(np.zeros((1, 3), dtype=pixels.dtype)).save(tmp_path / class_name / "fine.tif")
    bad = tmp_path / "a" / "wide.tif"
    Image.fromarray(pixels).save(bad)
    with pytest.raises(BadImageError, match=reason) as info:
        load_dataset(f"imagefolder:{tmp_path}", val_fraction=0.0, test_fraction=0.0)
    assert info.value.path == str(bad)
    splits = load_dataset(
        f"imagefolder:{tmp_path}", val_fraction=0.0, test_fraction=0.0, skip_bad_images=True
    )
    assert [entry.path for entry in splits.skipped] == [str(bad)]
    assert splits.skipped[0].reason.startswith("unreadable image: ") and len(splits.train) == 2
